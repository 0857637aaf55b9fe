package proxy

import "github.com/pgchaos/pgchaos/faults"

// Direction says which way a message travels through a session; the fault
// rules use the same type.
type Direction = faults.Direction

const (
	// ClientToServer is the frontend's stream: queries, Parse/Bind/Execute, COPY data.
	ClientToServer = faults.ClientToServer
	// ServerToClient is the backend's stream: rows, command tags, ReadyForQuery.
	ServerToClient = faults.ServerToClient
)

// messageNames maps a message type byte to its protocol name, per direction.
// The same byte means different things each way ('C' is Close from the
// client and CommandComplete from the server), so the tables are separate.
var messageNames = [2]map[byte]string{
	ClientToServer: {
		'Q': "query",
		'P': "parse",
		'B': "bind",
		'E': "execute",
		'D': "describe",
		'C': "close",
		'S': "sync",
		'H': "flush",
		'F': "function_call",
		'd': "copy_data",
		'c': "copy_done",
		'f': "copy_fail",
		'p': "password",
		'X': "terminate",
	},
	ServerToClient: {
		'R': "authentication",
		'K': "backend_key_data",
		'S': "parameter_status",
		'Z': "ready_for_query",
		'T': "row_description",
		'D': "data_row",
		'C': "command_complete",
		'E': "error_response",
		'N': "notice_response",
		'A': "notification_response",
		'1': "parse_complete",
		'2': "bind_complete",
		'3': "close_complete",
		'n': "no_data",
		's': "portal_suspended",
		't': "parameter_description",
		'I': "empty_query_response",
		'G': "copy_in_response",
		'H': "copy_out_response",
		'W': "copy_both_response",
		'd': "copy_data",
		'c': "copy_done",
		'V': "function_call_response",
		'v': "negotiate_protocol_version",
	},
}

// MessageName returns the protocol name of a message type byte in direction
// d, or "unknown".
func MessageName(d Direction, typ byte) string {
	if n, ok := messageNames[d][typ]; ok {
		return n
	}
	return "unknown"
}

// Startup-phase request codes (the 4 bytes after the length of an untyped
// startup packet).
const (
	codeProtocol3   = 3 << 16
	codeCancel      = 80877102
	codeSSLRequest  = 80877103
	codeGSSENC      = 80877104
	maxStartupBytes = 10000 // what PostgreSQL itself accepts
	tlsHandshake    = 0x16  // first byte of a TLS record: PG17 direct TLS
)
