package main

// What the modes besides the throughput benchmark share: starting
// PostgreSQL, PgBouncer and pgchaos as separate processes, and reading what
// a process holds from /proc and from pgchaos's /metrics.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// stack is a PostgreSQL and the pgchaos binary built from the working
// tree; each mode adds the PgBouncers and pgchaos processes it needs.
type stack struct {
	cl         cleanups
	tmp        string
	root       string
	pgchaosBin string
	pg         *pgtest.Postgres
	pgbench    *pgbench
	logger     *slog.Logger
}

// startStack builds pgchaos and starts PostgreSQL with the given settings.
// Call close when done, also after an error. A missing PostgreSQL,
// PgBouncer or pgbench is an error wrapping pgtest.ErrNotInstalled.
func startStack(ctx context.Context, pgSettings map[string]string) (*stack, error) {
	s := &stack{logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	tmp, err := os.MkdirTemp("", "pgchaos-bench-")
	if err != nil {
		return s, fmt.Errorf("creating temp dir: %w", err)
	}
	s.tmp = tmp
	s.cl.add(func() error { return os.RemoveAll(tmp) })
	if s.root, err = moduleRoot(ctx); err != nil {
		return s, err
	}
	progress("building pgchaos")
	s.pgchaosBin = filepath.Join(tmp, "pgchaos")
	if err := buildPgchaos(ctx, s.root, s.pgchaosBin); err != nil {
		return s, err
	}
	progress("starting PostgreSQL")
	pgCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	s.pg, err = pgtest.StartPostgres(pgCtx, pgtest.Options{Logger: s.logger, Settings: pgSettings})
	cancel()
	if err != nil {
		return s, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	s.cl.add(s.pg.Stop)
	if s.pgbench, err = newPgbench(s.pg.BinDir()); err != nil {
		return s, fmt.Errorf("%w: %w", pgtest.ErrNotInstalled, err)
	}
	return s, nil
}

func (s *stack) close() error { return s.cl.run() }

// startBouncer starts a PgBouncer in front of upstream with settings on
// top of pgtest's, and returns it as a target with its PID.
func (s *stack) startBouncer(ctx context.Context, name, upstream string, settings map[string]string) (target, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	b, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{
		Upstream: upstream, PoolMode: "transaction", Logger: s.logger, Settings: settings,
	})
	if err != nil {
		return target{}, fmt.Errorf("starting %s: %w", name, err)
	}
	s.cl.add(b.Stop)
	pid, err := listenerPID(b.Port())
	if err != nil {
		return target{}, fmt.Errorf("finding %s's PID: %w", name, err)
	}
	return target{name: name, port: b.Port(), pid: pid}, nil
}

// startPgchaos starts pgchaos in front of upstream and returns it as a
// target, with its control API.
func (s *stack) startPgchaos(ctx context.Context, upstream string) (target, rulesAPI, error) {
	c, port, api, err := startPgchaos(ctx, s.pgchaosBin, s.tmp, upstream)
	if err != nil {
		return target{}, rulesAPI{}, fmt.Errorf("starting pgchaos: %w", err)
	}
	s.cl.add(func() error { return c.stop(syscall.SIGTERM) })
	return target{name: "pgchaos", port: port, pid: c.pid()}, newRulesAPI(api), nil
}

// procRSS is the process's resident set (VmRSS) in bytes.
func procRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading RSS: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing VmRSS of %d: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// procFDs counts the process's open file descriptors.
func procFDs(pid int) (int, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, fmt.Errorf("counting descriptors: %w", err)
	}
	return len(fds), nil
}

// procContextSwitches sums voluntary and involuntary context switches over
// the process's threads: each is a thread going to sleep or being put off
// the CPU, so their rate is how often an idle process wakes up.
func procContextSwitches(pid int) (uint64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, fmt.Errorf("listing threads: %w", err)
	}
	var total uint64
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread ended meanwhile
		}
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("parsing %s of thread %s: %w", k, t.Name(), err)
				}
				total += n
			}
		}
	}
	return total, nil
}

// metricsClient fetches /metrics without keep-alive, so that the scrape
// leaves no idle connection (and its goroutine) in pgchaos behind: the
// soak compares goroutine counts across scrapes.
var metricsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// metrics scrapes pgchaos's /metrics: each metric's value, summed over its
// label sets (a gauge per proxy adds up to the process's total).
func (a rulesAPI) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading pgchaos metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading pgchaos metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading pgchaos metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	for _, line := range bytes.Split(body, []byte("\n")) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		sp := bytes.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if i := bytes.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(string(line[sp+1:]), 64)
		if err == nil {
			out[string(name)] += v
		}
	}
	return out, nil
}

// series counts the label sets of one metric in pgchaos's /metrics.
func (a rulesAPI) series(ctx context.Context, name string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reading pgchaos metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading pgchaos metrics: %w", err)
	}
	return bytes.Count(body, []byte("\n"+name+"{")), nil
}

// sessionInfo is the part of a GET /sessions entry the modes read.
type sessionInfo struct {
	ID              uint64    `json:"id"`
	Client          string    `json:"client"`
	Database        string    `json:"database"`
	ApplicationName string    `json:"application_name"`
	TxStatus        string    `json:"transaction_status"`
	Started         time.Time `json:"started"`
	MessagesIn      uint64    `json:"messages_client_to_server"`
	MessagesOut     uint64    `json:"messages_server_to_client"`
	BytesIn         uint64    `json:"bytes_client_to_server"`
	BytesOut        uint64    `json:"bytes_server_to_client"`
	Relay           string    `json:"relay"`
}

func (a rulesAPI) sessions(ctx context.Context) ([]sessionInfo, error) {
	var list []sessionInfo
	err := a.do(ctx, http.MethodGet, "/sessions", nil, http.StatusOK, &list)
	return list, err
}

// relays counts sessions by relay ("loop", "goroutine").
func relays(list []sessionInfo) map[string]int {
	out := map[string]int{}
	for _, s := range list {
		out[s.Relay]++
	}
	return out
}

// writeJSON writes v to path, indented, for --json.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding JSON results: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing JSON results: %w", err)
	}
	progress("wrote %s", path)
	return nil
}

// sleepCtx waits d or until ctx is done, and says which.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func kib(b float64) float64 { return b / 1024 }
