package proxy

// statements remembers, for the extended query protocol, the SQL of each
// prepared statement and which statement each portal was bound to, so that an
// Execute can be matched by the SQL it runs. Only the client-to-server pump
// touches it.
//
// The unnamed statement and portal are re-used by drivers for every query, so
// they live in reused byte slices: tracking them allocates nothing.
//
// What is kept is bounded, so that a session's memory follows its traffic,
// not its history: the first MaxStatementSQL bytes of each statement's SQL
// (rules match that prefix), and named statements' SQL up to
// MaxSessionStatementsSQL in all. A statement prepared beyond that budget
// is remembered without its SQL: rules that look at SQL do not match its
// Executes (its Parse, which carries the SQL, still matches).
type statements struct {
	unnamedSQL    []byte
	unnamedPortal []byte // statement name the unnamed portal was bound to
	named         map[string][]byte
	namedBytes    int
	portals       map[string]string
}

const (
	// MaxStatementSQL is how much of a prepared statement's SQL a session
	// keeps for matching Executes.
	MaxStatementSQL = 16 << 10
	// MaxSessionStatementsSQL bounds the SQL kept for a session's named
	// statements in all.
	MaxSessionStatementsSQL = 1 << 20
)

func (t *statements) parse(name, sql []byte) {
	sql = sql[:min(len(sql), MaxStatementSQL)]
	if len(name) == 0 {
		t.unnamedSQL = append(t.unnamedSQL[:0], sql...)
		return
	}
	if t.named == nil {
		t.named = make(map[string][]byte)
	}
	t.namedBytes -= len(t.named[string(name)])
	if t.namedBytes+len(sql) > MaxSessionStatementsSQL {
		t.named[string(name)] = nil
		return
	}
	t.named[string(name)] = append([]byte(nil), sql...)
	t.namedBytes += len(sql)
}

func (t *statements) bind(portal, stmt []byte) {
	if len(portal) == 0 {
		t.unnamedPortal = append(t.unnamedPortal[:0], stmt...)
		return
	}
	if t.portals == nil {
		t.portals = make(map[string]string)
	}
	t.portals[string(portal)] = string(stmt)
}

func (t *statements) close(kind byte, name []byte) {
	switch kind {
	case 'S':
		if len(name) == 0 {
			t.unnamedSQL = t.unnamedSQL[:0]
		} else {
			t.namedBytes -= len(t.named[string(name)])
			delete(t.named, string(name))
		}
	case 'P':
		if len(name) == 0 {
			t.unnamedPortal = t.unnamedPortal[:0]
		} else {
			delete(t.portals, string(name))
		}
	}
}

// statementSQL returns the SQL of a prepared statement ("" = unnamed).
func (t *statements) statementSQL(name []byte) []byte {
	if len(name) == 0 {
		return t.unnamedSQL
	}
	if sql, ok := t.named[string(name)]; ok {
		return sql
	}
	return nil
}

// portalSQL returns the SQL an Execute of the portal runs.
func (t *statements) portalSQL(portal []byte) []byte {
	if len(portal) == 0 {
		return t.statementSQL(t.unnamedPortal)
	}
	stmt, ok := t.portals[string(portal)]
	if !ok {
		return nil
	}
	return t.statementSQL([]byte(stmt))
}

// cstring splits a NUL-terminated string off the front of b. ok is false
// when b holds no NUL (a truncated or malformed message).
func cstring(b []byte) (s, rest []byte, ok bool) {
	for i, c := range b {
		if c == 0 {
			return b[:i], b[i+1:], true
		}
	}
	return nil, nil, false
}
