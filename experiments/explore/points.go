package explore

import (
	"strings"
	"sync"

	"github.com/pgchaos/pgchaos/faults"
)

// Protocols a statement is sent with.
const (
	ProtocolSimple   = "simple"
	ProtocolExtended = "extended"
)

// Connection points: faults on a connection rather than a statement.
const (
	// PointConnect is every new connection the application opens.
	PointConnect = "connect"
	// PointIdle is every moment a session is idle between transactions:
	// the server has just said so in a ReadyForQuery.
	PointIdle = "idle"
)

// Point is a fault point: a distinct statement of the application, as the
// clean run showed it, or one of its connection moments.
type Point struct {
	// ID names the point in tables and file names: s1, s2, ... for
	// statements in the order they first ran; connect and idle.
	ID string `json:"id"`
	// Connection is PointConnect or PointIdle; "" for a statement.
	Connection string `json:"connection,omitempty"`
	// Fingerprint is the statement with its constants replaced by $1,
	// $2, ... (faults.RedactSQL): the same statement with other values is
	// the same point.
	Fingerprint string `json:"fingerprint,omitempty"`
	Protocol    string `json:"protocol,omitempty"`
	// TxStatus is the session's transaction status when the statement was
	// sent: idle, in_transaction or failed.
	TxStatus string `json:"tx_status,omitempty"`
	// Tag is the command tag of the statement's first result, without
	// its counts ("INSERT", "COMMIT"); "" when the server answered none.
	Tag string `json:"tag,omitempty"`
	// Count is how often it happened in the clean run, and Answered how
	// many of those times the server answered it with a result.
	Count    int `json:"count"`
	Answered int `json:"answered,omitempty"`
	answered []bool
}

// Name is how the point reads in a table.
func (p Point) Name() string {
	switch p.Connection {
	case PointConnect:
		return "a new connection"
	case PointIdle:
		return "an idle session, between transactions"
	}
	return p.Fingerprint
}

// InDoubt says whether a cut after the point's result is the central
// in-doubt moment: the end of a transaction, or of its first phase.
func (p Point) InDoubt() bool {
	switch p.Tag {
	case "COMMIT", "PREPARE TRANSACTION", "COMMIT PREPARED":
		return true
	}
	return false
}

// AnsweredAt says whether the occurrence-th time (from 1) the statement
// ran in the clean run, the server answered it with a result: a cut or a
// lie after the result is only tried there, since a statement the server
// fails on has no result to cut.
func (p Point) AnsweredAt(occurrence int) bool {
	return occurrence >= 1 && occurrence <= len(p.answered) && p.answered[occurrence-1]
}

type pointKey struct{ fingerprint, protocol, tx string }

// pending is a statement waiting for its result, or (point nil) the Sync
// that ends a batch of them.
type pending struct {
	point *Point
	occ   int // its occurrence, from 1
}

// recorder learns the fault points of one proxy from its traffic in the
// clean run: the engine shows it every statement, Sync, result and
// ReadyForQuery (faults.Options.Observe).
type recorder struct {
	proxy string

	mu     sync.Mutex
	points map[pointKey]*Point
	order  []*Point
	// waiting are, per session, the statements whose result has not come
	// back yet and the Syncs between them, oldest first.
	waiting  map[uint64][]pending
	sessions map[uint64]bool
	idle     int
}

func newRecorder(proxy string) *recorder {
	return &recorder{proxy: proxy, points: map[pointKey]*Point{}, waiting: map[uint64][]pending{}, sessions: map[uint64]bool{}}
}

func (rc *recorder) observe(proxy string, s *faults.Session, m *faults.Message) {
	if proxy != rc.proxy || s == nil {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.sessions[s.ID] = true
	q := rc.waiting[s.ID]
	if m.Dir == faults.ClientToServer {
		switch {
		case m.Type == 'S':
			rc.waiting[s.ID] = append(q, pending{})
		case (m.Type == 'Q' || m.Type == 'E') && m.SQL != nil:
			k := pointKey{fingerprint: faults.RedactSQL(m.SQL), protocol: ProtocolSimple, tx: txStatusName(s.TxStatus)}
			if m.Type == 'E' {
				k.protocol = ProtocolExtended
			}
			p := rc.points[k]
			if p == nil {
				p = &Point{Fingerprint: k.fingerprint, Protocol: k.protocol, TxStatus: k.tx}
				rc.points[k] = p
				rc.order = append(rc.order, p)
			}
			p.Count++
			p.answered = append(p.answered, false)
			rc.waiting[s.ID] = append(q, pending{point: p, occ: p.Count})
		}
		return
	}
	switch m.Type {
	case 'C', 'I', 's', 'E':
		if len(q) == 0 || q[0].point == nil {
			return
		}
		head := q[0]
		if m.Type != 'E' {
			head.point.answered[head.occ-1] = true
			if m.Type == 'C' && head.point.Tag == "" {
				head.point.Tag = tagWord(m.Tag)
			}
		}
		// A simple query may hold several statements, each with a result
		// of its own: it is done at its ReadyForQuery. An Execute is done
		// at its result; after an error the server skips the rest of the
		// batch, which its ReadyForQuery then ends.
		if head.point.Protocol == ProtocolExtended && m.Type != 'E' {
			rc.waiting[s.ID] = q[1:]
		}
	case 'Z':
		// The response to the oldest request ends: a simple query, or a
		// batch up to its Sync.
		switch {
		case len(q) > 0 && q[0].point != nil && q[0].point.Protocol == ProtocolSimple:
			q = q[1:]
		default:
			for len(q) > 0 {
				sync := q[0].point == nil
				q = q[1:]
				if sync {
					break
				}
			}
		}
		if len(q) == 0 {
			delete(rc.waiting, s.ID)
		} else {
			rc.waiting[s.ID] = q
		}
		if s.TxStatus == 'I' {
			rc.idle++
		}
	}
}

// learned is what the clean run showed: statements in the order they
// first ran, then the connection points.
func (rc *recorder) learned() []Point {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []Point
	for i, p := range rc.order {
		q := *p
		q.ID = "s" + itoa(i+1)
		q.answered = append([]bool(nil), p.answered...)
		for _, a := range q.answered {
			if a {
				q.Answered++
			}
		}
		out = append(out, q)
	}
	if n := len(rc.sessions); n > 0 {
		out = append(out, Point{ID: PointConnect, Connection: PointConnect, Count: n})
	}
	if rc.idle > 0 {
		out = append(out, Point{ID: PointIdle, Connection: PointIdle, Count: rc.idle})
	}
	return out
}

func txStatusName(b byte) string {
	switch b {
	case 'T':
		return "in_transaction"
	case 'E':
		return "failed"
	}
	return "idle"
}

// tagWord is a command tag without its counts: "INSERT 0 1" is INSERT.
func tagWord(tag []byte) string {
	words := strings.Fields(string(tag))
	for len(words) > 1 && isDigits(words[len(words)-1]) {
		words = words[:len(words)-1]
	}
	return strings.Join(words, " ")
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
