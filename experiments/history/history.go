// Package history records what every workload client was told, operation
// by operation, for verifiers to judge afterwards (Jepsen's history).
package history

import (
	"sort"
	"sync"
	"time"
)

// Outcome is what a client can know about an operation.
type Outcome string

const (
	// OK: acknowledged; it definitely happened.
	OK Outcome = "ok"
	// Fail: definitely did not happen (a server error such as 40001 or
	// 40P01 that aborted it, or it never reached the server).
	Fail Outcome = "fail"
	// Unknown: the connection was lost while a commit, PREPARE TRANSACTION
	// or COMMIT PREPARED was in flight; it may or may not have happened.
	Unknown Outcome = "unknown"
)

// Op is one operation of one workload client.
type Op struct {
	Workload string `json:"workload"`
	Client   int    `json:"client"`
	Seq      int64  `json:"seq"`
	// Kind is what was attempted: "insert", "transfer", a statement's name.
	Kind string `json:"kind"`
	// Key identifies the write (a ledger row's key), if any.
	Key string `json:"key,omitempty"`
	// GID is the two-phase transaction's gid, if any.
	GID string `json:"gid,omitempty"`
	// Phase is how far a two-phase operation got before its outcome:
	// "insert", "prepare", "commit_prepared" (or "" for one phase).
	Phase    string        `json:"phase,omitempty"`
	Start    time.Time     `json:"start"`
	End      time.Time     `json:"end"`
	Outcome  Outcome       `json:"outcome"`
	SQLState string        `json:"sqlstate,omitempty"`
	Error    string        `json:"error,omitempty"`
	Latency  time.Duration `json:"latency_ns"`
	// Retried holds the SQLSTATE of each attempt that failed and was
	// retried before this outcome (a serialization failure, a deadlock):
	// errors the client was told even when the operation succeeded.
	Retried []string `json:"retried,omitempty"`
}

// History is an append-only, concurrency-safe list of operations.
type History struct {
	mu  sync.Mutex
	ops []Op
}

// Add records an operation; Latency is filled from Start and End.
func (h *History) Add(op Op) {
	if op.Latency == 0 && !op.End.IsZero() {
		op.Latency = op.End.Sub(op.Start)
	}
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of the operations, ordered by start time.
func (h *History) Ops() []Op {
	h.mu.Lock()
	out := append([]Op(nil), h.ops...)
	h.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// Of returns the operations of one workload.
func (h *History) Of(workload string) []Op {
	var out []Op
	for _, op := range h.Ops() {
		if op.Workload == workload {
			out = append(out, op)
		}
	}
	return out
}

// Counts tallies outcomes.
func Counts(ops []Op) map[Outcome]int {
	c := map[Outcome]int{}
	for _, op := range ops {
		c[op.Outcome]++
	}
	return c
}
