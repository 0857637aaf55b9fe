package pgtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// postmasterKillWait bounds the wait for killed processes to die; SIGKILL
// takes effect in milliseconds.
const postmasterKillWait = 5 * time.Second

// stopPostmaster sends sig to the postmaster of pr and waits up to grace for
// it to exit, which it does only after all its children have. If it does
// not, or sig is SIGKILL, it kills the postmaster and every process it
// forked at once (killTree) and waits until they are all gone: a restarted
// postmaster refuses to start while a process of its predecessor still
// holds the shared memory. killed reports whether it came to that.
//
// The process group is not enough here: every child of the postmaster
// calls setsid(), so killing the group leaves the backends running.
func stopPostmaster(pr *proc, sig syscall.Signal, grace time.Duration) (killed bool, err error) {
	pid := pr.cmd.Process.Pid
	if pr.exited() {
		return false, nil
	}
	if sig != syscall.SIGKILL {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return false, fmt.Errorf("signalling the postmaster (pid %d) with %v: %w", pid, sig, err)
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-pr.done:
			return false, nil
		case <-t.C:
		}
	}
	pids, err := killTree(pid)
	if err != nil {
		return true, err
	}
	select {
	case <-pr.done:
	case <-time.After(postmasterKillWait):
		return true, fmt.Errorf("postmaster (pid %d) still running %s after SIGKILL", pid, postmasterKillWait)
	}
	deadline := time.Now().Add(postmasterKillWait)
	for {
		alive := aliveOf(pids)
		if len(alive) == 0 {
			return true, nil
		}
		if time.Now().After(deadline) {
			return true, fmt.Errorf("processes %v of the postmaster (pid %d) still running %s after SIGKILL", alive, pid, postmasterKillWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// killStrayPostmaster kills the postmaster that postmaster.pid in dataDir
// names, and every process it forked, when it is alive and runs on that
// data directory (its working directory): one that pgtest did not start.
func killStrayPostmaster(dataDir string) error {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return nil // no server, or none that got as far as its pid file
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return nil
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || filepath.Clean(cwd) != filepath.Clean(dataDir) {
		return nil // gone, or another process that reuses the pid
	}
	pids, err := killTree(pid)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(postmasterKillWait)
	for len(aliveOf(pids)) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v (postmaster pid %d) still running %s after SIGKILL", aliveOf(pids), pid, postmasterKillWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}
