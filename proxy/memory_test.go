package proxy

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A session keeps no more than a bounded prefix of what it once carried:
// memory follows traffic, not history.
func TestLargeMessagesAreNotKept(t *testing.T) {
	big := "SELECT '" + strings.Repeat("x", 900<<10) + "'"
	var stream []byte
	stream = append(stream, msg('P', cstr("big"), cstr(big), []byte{0, 0})...)
	stream = append(stream, msg('P', cstr(""), cstr(big), []byte{0, 0})...)
	stream = append(stream, msg('B', cstr(""), cstr("big"), []byte{0, 0, 0, 0, 0, 0})...)
	stream = append(stream, msg('S')...)
	var out bytes.Buffer
	p := testPump(ClientToServer, &chunkReader{data: stream, sizes: []int{16 << 10}}, &out)
	if err := p.run(); err == nil || !bytes.Equal(out.Bytes(), stream) {
		t.Fatalf("stream not relayed whole: %d of %d bytes, %v", out.Len(), len(stream), err)
	}
	if len(p.buf) > pumpBufferSize {
		t.Fatalf("the pump kept a %d-byte buffer after the large messages", len(p.buf))
	}
	if n := len(p.stmts.statementSQL([]byte("big"))); n != MaxStatementSQL {
		t.Fatalf("kept %d bytes of the named statement's SQL, want the first %d", n, MaxStatementSQL)
	}
	if n := cap(p.stmts.unnamedSQL); n > 2*MaxStatementSQL {
		t.Fatalf("kept %d bytes for the unnamed statement", n)
	}
	if sql := p.stmts.portalSQL(nil); !bytes.HasPrefix([]byte(big), sql) || len(sql) == 0 {
		t.Fatal("an Execute of the unnamed portal no longer finds the start of its SQL")
	}
}

// Named statements' SQL is bounded per session: beyond the budget a
// statement is known but its SQL is not, and closing statements frees it.
func TestStatementBudget(t *testing.T) {
	var st statements
	sql := bytes.Repeat([]byte("x"), MaxStatementSQL)
	n := MaxSessionStatementsSQL / MaxStatementSQL
	for i := range n {
		st.parse([]byte{'s', byte(i), byte(i >> 8)}, sql)
	}
	if st.namedBytes != MaxSessionStatementsSQL {
		t.Fatalf("kept %d bytes, want %d", st.namedBytes, MaxSessionStatementsSQL)
	}
	st.parse([]byte("over"), sql)
	if got := st.statementSQL([]byte("over")); got != nil {
		t.Fatalf("a statement beyond the budget kept %d bytes of SQL", len(got))
	}
	st.close('S', []byte{'s', 0, 0})
	st.parse([]byte("after-close"), sql)
	if got := st.statementSQL([]byte("after-close")); len(got) != MaxStatementSQL {
		t.Fatalf("closing a statement did not free its budget: kept %d bytes", len(got))
	}
	// Preparing a name again replaces its SQL within the same budget.
	st.parse([]byte("after-close"), []byte("SELECT 1"))
	if st.namedBytes != MaxSessionStatementsSQL-MaxStatementSQL+len("SELECT 1") {
		t.Fatalf("re-preparing a name: %d bytes accounted", st.namedBytes)
	}
}

// When most of many sessions have closed, the memory they used goes back
// to the operating system once, a second after the last of them.
func TestRegistryGivesMemoryBack(t *testing.T) {
	r := NewRegistry()
	var reclaimed atomic.Int32
	r.reclaim = func() { reclaimed.Add(1) }
	var list []*Session
	for range 300 {
		s := &Session{}
		r.add(s)
		list = append(list, s)
	}
	for _, s := range list[:100] {
		r.remove(s)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := reclaimed.Load(); n != 0 {
		t.Fatalf("memory given back %d times after a third of the sessions closed", n)
	}
	for _, s := range list[100:] {
		r.remove(s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for reclaimed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := reclaimed.Load(); n != 1 {
		t.Fatalf("memory given back %d times after the sessions closed; want once", n)
	}
}
