package proxy

import (
	"cmp"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgchaos/pgchaos/faults"
)

// TxStatus is the transaction status the server last reported in
// ReadyForQuery.
type TxStatus byte

const (
	TxUnknown TxStatus = 0
	TxIdle    TxStatus = 'I'
	TxInTx    TxStatus = 'T'
	TxFailed  TxStatus = 'E'
)

func (t TxStatus) String() string {
	switch t {
	case TxIdle:
		return "idle"
	case TxInTx:
		return "in_transaction"
	case TxFailed:
		return "failed"
	}
	return "unknown"
}

// Session is one client connection relayed to one upstream connection.
// Counters are atomics because the control plane reads them while the
// session's pumps write them.
type Session struct {
	ID       uint64
	Proxy    string
	Client   net.Addr
	Started  time.Time
	User     string
	Database string
	// Replication is the startup "replication" parameter, "" for a normal session.
	Replication string

	appName    atomic.Pointer[string]
	onLoop     atomic.Bool // relayed by an event loop now, not goroutine pumps
	txStatus   atomic.Uint32
	backendPID atomic.Int32
	msgs       [2]atomic.Uint64
	bytes      [2]atomic.Uint64

	owner *Proxy
	conn  net.Conn // the accepted client connection, before any TLS

	mu     sync.Mutex
	killed bool
	// farewell is the FATAL message the client is told as the session is
	// ended by a shutdown ("": a bare close).
	farewell string
	// stop ends the session the way its relay needs: closing sockets for
	// goroutine pumps, a request to the event loop for loop sessions.
	stop func()

	// On goroutine pumps, writes to the client hold clientMu, and
	// clientBoundary says whether what the client was sent so far ends
	// on a message boundary: only then may a farewell go out.
	clientMu       sync.Mutex
	clientBoundary bool
}

// SessionInfo is a point-in-time copy of a session, as the control plane shows it.
type SessionInfo struct {
	ID              uint64    `json:"id"`
	Proxy           string    `json:"proxy"`
	Client          string    `json:"client"`
	User            string    `json:"user"`
	Database        string    `json:"database"`
	ApplicationName string    `json:"application_name"`
	Replication     string    `json:"replication,omitempty"`
	TxStatus        string    `json:"transaction_status"`
	BackendPID      int32     `json:"backend_pid,omitempty"`
	Started         time.Time `json:"started"`
	MessagesIn      uint64    `json:"messages_client_to_server"`
	MessagesOut     uint64    `json:"messages_server_to_client"`
	BytesIn         uint64    `json:"bytes_client_to_server"`
	BytesOut        uint64    `json:"bytes_server_to_client"`
	// Relay is how the session is carried now: "loop" (an event loop, the
	// fast path) or "goroutine" (a goroutine per direction: TLS sessions,
	// and sessions while a fault verdict or byte toxic acts on them).
	Relay string `json:"relay"`
}

// faultView is what fault rules see of the session now.
func (s *Session) faultView() faults.Session {
	v := faults.Session{ID: s.ID, User: s.User, Database: s.Database, ApplicationName: s.ApplicationName(), TxStatus: byte(s.TxStatus())}
	if ta, ok := s.Client.(*net.TCPAddr); ok {
		v.Client = ta.AddrPort().Addr()
	}
	return v
}

// ApplicationName is the current application_name: from the startup packet,
// then from the server's ParameterStatus when the client changes it.
func (s *Session) ApplicationName() string {
	if p := s.appName.Load(); p != nil {
		return *p
	}
	return ""
}

// TxStatus is the transaction status from the last ReadyForQuery.
func (s *Session) TxStatus() TxStatus { return TxStatus(s.txStatus.Load()) }

// Info copies the session's current state.
func (s *Session) Info() SessionInfo {
	client := ""
	if s.Client != nil {
		client = s.Client.String()
	}
	return SessionInfo{
		ID:              s.ID,
		Proxy:           s.Proxy,
		Client:          client,
		User:            s.User,
		Database:        s.Database,
		ApplicationName: s.ApplicationName(),
		Replication:     s.Replication,
		TxStatus:        s.TxStatus().String(),
		BackendPID:      s.backendPID.Load(),
		Started:         s.Started,
		MessagesIn:      s.msgs[ClientToServer].Load(),
		MessagesOut:     s.msgs[ServerToClient].Load(),
		BytesIn:         s.bytes[ClientToServer].Load(),
		BytesOut:        s.bytes[ServerToClient].Load(),
		Relay:           relayName[s.onLoop.Load()],
	}
}

var relayName = map[bool]string{true: "loop", false: "goroutine"}

// Kill ends the session: both connections are closed. It never waits on
// traffic.
func (s *Session) Kill() {
	s.mu.Lock()
	s.killed = true
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// terminate ends the session, telling the client why with FATAL 57P01 (as
// PostgreSQL tells its clients when it shuts down) where the stream allows
// a message of pgchaos's own. It never waits on traffic.
func (s *Session) terminate(msg string) {
	s.mu.Lock()
	s.farewell = msg
	s.mu.Unlock()
	s.Kill()
}

func (s *Session) farewellMessage() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.farewell
}

// sayFarewell writes the farewell to a client on goroutine pumps, unless
// the server pump is writing to it or stopped mid-message.
func (s *Session) sayFarewell(client net.Conn) {
	msg := s.farewellMessage()
	if msg == "" || !s.clientMu.TryLock() {
		return
	}
	defer s.clientMu.Unlock()
	if s.clientBoundary {
		client.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		client.Write(errorResponse("FATAL", "57P01", msg))
	}
}

// clientWriter is the server pump's destination on goroutine pumps: the
// client, written under clientMu.
type clientWriter struct {
	s *Session
	p *pump
	c net.Conn
}

func (w *clientWriter) Write(b []byte) (int, error) {
	w.s.clientMu.Lock()
	n, err := w.c.Write(b)
	w.s.clientBoundary = w.p.atBoundary()
	w.s.clientMu.Unlock()
	return n, err
}

// setStop installs how Kill ends the session. It reports false when the
// session was killed before its relay started.
func (s *Session) setStop(stop func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop = stop
	return !s.killed
}

func (s *Session) wasKilled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killed
}

// Registry holds the live sessions of every proxy in the process, so that
// one id names one session whichever proxy carries it, and one limit
// bounds them all.
type Registry struct {
	mu       sync.Mutex
	next     uint64
	sessions map[uint64]*Session
	// maxSessions bounds sessions (started or starting) across the
	// process; reserved counts them.
	maxSessions atomic.Int64
	reserved    atomic.Int64
	// peak is the most sessions since memory was last given back; when
	// many of them have gone, reclaim gives the memory they used back to
	// the operating system (a second after the last of them, so a burst
	// of closes costs one). Go would do it only after its next garbage
	// collection, which an idle proxy does not run for minutes.
	peak      int
	reclaimer *time.Timer
	reclaim   func()
}

// reclaimFrom is how many sessions must have been open for their closing
// to be worth giving memory back for.
const reclaimFrom = 100

// DefaultMaxSessions is how many sessions a pgchaos process relays at once
// unless told otherwise.
const DefaultMaxSessions = 10000

// NewRegistry returns an empty session registry.
func NewRegistry() *Registry {
	r := &Registry{sessions: make(map[uint64]*Session), reclaim: debug.FreeOSMemory}
	r.maxSessions.Store(DefaultMaxSessions)
	return r
}

// SetMaxSessions sets how many sessions may run at once (n <= 0: the
// default). Clients beyond it get FATAL 53300, as from PostgreSQL.
func (r *Registry) SetMaxSessions(n int) {
	if n <= 0 {
		n = DefaultMaxSessions
	}
	r.maxSessions.Store(int64(n))
}

// MaxSessions is the limit SetMaxSessions set.
func (r *Registry) MaxSessions() int { return int(r.maxSessions.Load()) }

// reserve takes a place for a session about to start; false when the
// limit is reached. unreserve gives it back.
func (r *Registry) reserve() bool {
	if r.reserved.Add(1) > r.maxSessions.Load() {
		r.reserved.Add(-1)
		return false
	}
	return true
}

func (r *Registry) unreserve() { r.reserved.Add(-1) }

func (r *Registry) add(s *Session) {
	r.mu.Lock()
	r.next++
	s.ID = r.next
	r.sessions[s.ID] = s
	r.peak = max(r.peak, len(r.sessions))
	r.mu.Unlock()
}

func (r *Registry) remove(s *Session) {
	r.mu.Lock()
	delete(r.sessions, s.ID)
	if n := len(r.sessions); r.peak >= reclaimFrom && n <= r.peak/2 {
		r.peak = n
		if r.reclaimer == nil {
			r.reclaimer = time.AfterFunc(time.Second, r.reclaim)
		} else {
			r.reclaimer.Reset(time.Second)
		}
	}
	r.mu.Unlock()
}

// Sessions lists the live sessions, ordered by id.
func (r *Registry) Sessions() []SessionInfo {
	r.mu.Lock()
	list := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		list = append(list, s)
	}
	r.mu.Unlock()
	out := make([]SessionInfo, len(list))
	for i, s := range list {
		out[i] = s.Info()
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func (r *Registry) sessionsOf(p *Proxy) []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Session
	for _, s := range r.sessions {
		if s.owner == p {
			out = append(out, s)
		}
	}
	return out
}

// Get returns the live session with the given id.
func (r *Registry) Get(id uint64) (*Session, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[id]
	return s, ok
}

// Kill closes the session with the given id; false if there is none.
func (r *Registry) Kill(id uint64) bool {
	s, ok := r.Get(id)
	if ok {
		s.Kill()
	}
	return ok
}
