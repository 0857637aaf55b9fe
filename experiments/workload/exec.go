package workload

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

const (
	// execKillGrace is how long a command has between SIGTERM and SIGKILL.
	execKillGrace = 5 * time.Second
	// execOutputTail is how much of a command's output is kept.
	execOutputTail = 4 << 10
	// execPipeWait bounds waiting for output after the command exited,
	// when something it started in the background holds the pipe open.
	execPipeWait = 2 * time.Second
)

// execLoad runs a shell command (one per client) for the workload's
// duration: the load is someone else's program, e.g. pgbench.
type execLoad struct {
	spec      experiments.Workload
	env       Env
	log       *slog.Logger
	killGrace time.Duration
	ran       atomic.Bool

	mu     sync.Mutex
	paused bool
	procs  map[*os.Process]struct{}
}

func newExec(spec experiments.Workload, env Env, log *slog.Logger) (*execLoad, error) {
	if spec.Exec == nil || strings.TrimSpace(spec.Exec.Command) == "" {
		return nil, fmt.Errorf("workload %q: no command", spec.Name)
	}
	return &execLoad{spec: spec, env: env, log: log, killGrace: execKillGrace, procs: map[*os.Process]struct{}{}}, nil
}

func (e *execLoad) Name() string                { return e.spec.Name }
func (e *execLoad) Setup(context.Context) error { return nil }

// Pause stops the commands (SIGSTOP to their process groups); they hold on
// to whatever they had open, as a paused client would.
func (e *execLoad) Pause() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.paused = true
	for p := range e.procs {
		stopGroup(p)
	}
}

func (e *execLoad) Resume() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.paused = false
	for p := range e.procs {
		continueGroup(p)
	}
}

func (e *execLoad) Run(ctx context.Context) error {
	if e.ran.Swap(true) {
		return fmt.Errorf("workload %q: Run called twice", e.spec.Name)
	}
	runCtx, cancel := runContext(ctx, e.spec.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := 1; i <= e.spec.Clients; i++ {
		wg.Go(func() {
			if op, ran := e.runOne(runCtx, i); ran {
				e.env.History.Add(op)
			}
		})
	}
	wg.Wait()
	return nil
}

// runOne runs the command once and says how it went: ok when it exited 0
// or was stopped by us at the end of the run, fail otherwise, with the tail
// of its output. ran is false when the run ended before it started.
func (e *execLoad) runOne(ctx context.Context, client int) (op history.Op, ran bool) {
	log := e.log.With("client", client)
	op = history.Op{Workload: e.spec.Name, Client: client, Seq: 1, Kind: "exec", Start: time.Now()}
	cmd := exec.Command("sh", "-c", e.spec.Exec.Command)
	cmd.Env = append(os.Environ(),
		"PGCHAOS_DSN="+e.dsnOf(client),
		"PGCHAOS_WORKLOAD="+e.spec.Name,
		"PGCHAOS_RUN_ID="+e.env.RunID,
		"PGCHAOS_CLIENT="+strconv.Itoa(client),
	)
	for k, v := range e.spec.Exec.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := NewOutputTail(execOutputTail)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = execPipeWait
	newProcessGroup(cmd)

	if ctx.Err() != nil {
		return op, false
	}
	if err := e.start(cmd); err != nil {
		op.End, op.Outcome, op.Error = time.Now(), history.Fail, fmt.Sprintf("starting %q: %v", e.spec.Exec.Command, err)
		return op, true
	}
	defer e.forget(cmd.Process)
	log.Info("command started", "pid", cmd.Process.Pid, "command", e.spec.Exec.Command)

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	stopped := false
	select {
	case err = <-exited:
	case <-ctx.Done():
		stopped = true
		terminateGroup(cmd.Process)
		t := time.NewTimer(e.killGrace)
		select {
		case err = <-exited:
		case <-t.C:
			log.Warn("command ignored SIGTERM; killing it", "pid", cmd.Process.Pid, "grace", e.killGrace)
			killGroup(cmd.Process)
			err = <-exited
		}
		t.Stop()
	}
	op.End = time.Now()
	switch {
	case stopped:
		op.Outcome = history.OK
		log.Info("command stopped at the end of the run", "status", exitStatus(err), "output", out.String())
	case err == nil:
		op.Outcome = history.OK
		log.Info("command finished", "output", out.String())
	default:
		op.Outcome = history.Fail
		op.Error = exitStatus(err)
		if tail := out.String(); tail != "" {
			op.Error += "; output: " + tail
		}
		log.Warn("command failed", "status", exitStatus(err), "output", out.String())
	}
	return op, true
}

// start starts cmd and, under the lock Pause takes, registers it, so that a
// command started while paused is stopped at once.
func (e *execLoad) start(cmd *exec.Cmd) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	e.procs[cmd.Process] = struct{}{}
	if e.paused {
		stopGroup(cmd.Process)
	}
	return nil
}

func (e *execLoad) forget(p *os.Process) {
	e.mu.Lock()
	delete(e.procs, p)
	e.mu.Unlock()
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// OutputTail keeps the last bytes a command wrote: an exec workload's and
// an exec step's output, for their logs, errors and status lines.
type OutputTail struct {
	max int
	mu  sync.Mutex
	buf []byte
	cut bool
}

// NewOutputTail keeps the last max bytes.
func NewOutputTail(max int) *OutputTail { return &OutputTail{max: max} }

func (t *OutputTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.buf = t.buf[:0]
		t.cut = true
	} else if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = t.buf[:copy(t.buf, t.buf[over:])]
		t.cut = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String is the tail, marked with "..." when earlier output was dropped.
func (t *OutputTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimRight(string(t.buf), "\n")
	if t.cut {
		return "..." + s
	}
	return s
}

// Raw is the tail as written, without the "..." String adds.
func (t *OutputTail) Raw() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// LastLine is the last non-empty line written so far.
func (t *OutputTail) LastLine() string {
	lines := strings.Split(strings.TrimRight(t.Raw(), "\n"), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// dsnOf is where client connects: the DSNs in turn, when there are several.
func (e *execLoad) dsnOf(client int) string {
	if n := len(e.env.DSNs); n > 0 {
		return e.env.DSNs[(client-1)%n]
	}
	return e.env.DSN
}
