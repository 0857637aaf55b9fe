package workload

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

func execSpec(command string, env map[string]string) experiments.Workload {
	return experiments.Workload{Name: "cmd", Type: experiments.WorkloadExec, Clients: 1,
		Exec: &experiments.ExecOptions{Command: command, Env: env}}
}

func TestExec(t *testing.T) {
	long := strings.Repeat("x", 10000)
	cases := []struct {
		name      string
		command   string
		runFor    time.Duration
		want      history.Outcome
		wantError []string // substrings of op.Error
		notError  string
	}{
		{"exit 0 with its environment", `test "$PGCHAOS_DSN" = "postgres://example/db" && test "$FOO" = bar && test "$PGCHAOS_WORKLOAD" = cmd && test "$PGCHAOS_RUN_ID" = r1`,
			10 * time.Second, history.OK, nil, ""},
		{"exit 3", "echo some output; echo oops >&2; exit 3", 10 * time.Second, history.Fail,
			[]string{"exit status 3", "some output", "oops"}, ""},
		{"output tail", "echo START; printf '" + long + "'; echo; echo END; exit 1", 10 * time.Second, history.Fail,
			[]string{"exit status 1", "END"}, "START"},
		{"stopped at the end", "sleep 30", 200 * time.Millisecond, history.OK, nil, ""},
		{"killed after ignoring SIGTERM", "trap '' TERM; sleep 30 & wait; sleep 30", 200 * time.Millisecond, history.OK, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &history.History{}
			w, err := New(execSpec(tc.command, map[string]string{"FOO": "bar"}),
				Env{DSN: "postgres://example/db", RunID: "r1", History: h, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			w.(*execLoad).killGrace = 300 * time.Millisecond
			if err := w.Setup(context.Background()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.runFor)
			defer cancel()
			start := time.Now()
			if err := w.Run(ctx); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > tc.runFor+5*time.Second {
				t.Fatalf("Run took %v", took)
			}
			ops := h.Of("cmd")
			if len(ops) != 1 {
				t.Fatalf("%d ops, want 1: %v", len(ops), ops)
			}
			op := ops[0]
			if op.Outcome != tc.want || op.Kind != "exec" {
				t.Fatalf("op %+v: want %s", op, tc.want)
			}
			for _, s := range tc.wantError {
				if !strings.Contains(op.Error, s) {
					t.Fatalf("error %q lacks %q", op.Error, s)
				}
			}
			if tc.notError != "" && strings.Contains(op.Error, tc.notError) {
				t.Fatalf("error %q should have lost %q off the tail", op.Error, tc.notError)
			}
			if len(op.Error) > execOutputTail+100 {
				t.Fatalf("error is %d bytes long", len(op.Error))
			}
		})
	}
}

func TestTailBuffer(t *testing.T) {
	b := NewOutputTail(8)
	b.Write([]byte("abc"))
	if b.String() != "abc" {
		t.Fatalf("%q", b.String())
	}
	b.Write([]byte("defghij"))
	if b.String() != "...cdefghij" {
		t.Fatalf("%q", b.String())
	}
	b.Write([]byte("0123456789"))
	if b.String() != "...23456789" {
		t.Fatalf("%q", b.String())
	}
}

// A paused command is stopped, and runs on after Resume.
func TestExecPause(t *testing.T) {
	dir := t.TempDir()
	h := &history.History{}
	// It counts, ten times a second, into a file.
	w, err := New(execSpec("i=0; while true; do i=$((i+1)); echo $i > "+dir+"/n; sleep 0.05; done", nil),
		Env{RunID: "r1", History: h, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	defer stop()
	read := func() string {
		b, _ := readFile(dir + "/n")
		return b
	}
	waitFor(t, func() bool { return read() != "" })
	w.Pause()
	time.Sleep(100 * time.Millisecond) // let a write in flight land
	frozen := read()
	time.Sleep(300 * time.Millisecond)
	if got := read(); got != frozen {
		t.Fatalf("paused command went on counting: %q then %q", frozen, got)
	}
	w.Resume()
	waitFor(t, func() bool { return read() != frozen })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if ops := h.Of("cmd"); len(ops) != 1 || ops[0].Outcome != history.OK {
		t.Fatalf("ops %v: want one ok", ops)
	}
}

// With several DSNs (the instances of a set), an exec workload's clients
// are given them in turn.
func TestExecClientsTakeDSNsInTurn(t *testing.T) {
	h := &history.History{}
	spec := execSpec(`case $PGCHAOS_CLIENT in 1|3) test "$PGCHAOS_DSN" = postgres://a/db;; 2) test "$PGCHAOS_DSN" = postgres://b/db;; *) exit 9;; esac`, nil)
	spec.Clients = 3
	w, err := New(spec, Env{DSN: "postgres://a/db", DSNs: []string{"postgres://a/db", "postgres://b/db"}, RunID: "r1", History: h, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	ops := h.Of("cmd")
	if len(ops) != 3 {
		t.Fatalf("%d operations, want 3", len(ops))
	}
	for _, op := range ops {
		if op.Outcome != history.OK {
			t.Errorf("client %d: %s %s", op.Client, op.Outcome, op.Error)
		}
	}
}
