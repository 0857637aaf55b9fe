package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sysProcAttr puts the server in its own process group, so a Ctrl-C aimed at
// `go test` does not hit it before Stop runs and so Stop can kill the whole
// group, and arranges for the kernel to SIGKILL it if the test binary dies
// without calling Stop (panic, timeout, os.Exit).
//
// Pdeathsig fires when the *thread* that forked the child exits. The Go
// runtime keeps its threads alive, except ones locked with LockOSThread
// whose goroutine exits; do not start servers from such goroutines.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: cred,
	}
}

// killTree freezes pid and all its descendants with SIGSTOP, so that none
// runs on or forks while the others die, then SIGKILLs them all, as one
// crash would. It returns the pids it killed.
func killTree(pid int) ([]int, error) {
	frozen := map[int]bool{pid: true}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil, nil
		}
		return nil, fmt.Errorf("freezing pid %d: %w", pid, err)
	}
	// A fork in progress completes before its parent stops, so once every
	// frozen process is stopped, one more scan finds all the children.
	deadline := time.Now().Add(time.Second)
	for {
		procs := scanProcs()
		grew := false
		for child, st := range procs {
			if !frozen[child] && frozen[st.ppid] {
				if syscall.Kill(child, syscall.SIGSTOP) == nil {
					frozen[child] = true
					grew = true
				}
			}
		}
		settled := true
		for p := range frozen {
			if st, ok := procs[p]; ok && st.state != 'T' && st.state != 't' && st.state != 'Z' && st.state != 'X' {
				settled = false
			}
		}
		if (!grew && settled) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	pids := make([]int, 0, len(frozen))
	for p := range frozen {
		// ESRCH: it exited meanwhile, which is what we want.
		_ = syscall.Kill(p, syscall.SIGKILL)
		pids = append(pids, p)
	}
	return pids, nil
}

// aliveOf returns those of pids that still run. Zombies do not count: a
// killed backend whose postmaster is gone is reaped by init, which in a
// container may never do it, but it holds no memory or files any more.
func aliveOf(pids []int) []int {
	var alive []int
	for _, p := range pids {
		if st, ok := readProcStat(p); ok && st.state != 'Z' && st.state != 'X' {
			alive = append(alive, p)
		}
	}
	return alive
}

type procStat struct {
	state byte
	ppid  int
}

// scanProcs reads the state and parent of every process.
func scanProcs() map[int]procStat {
	procs := map[int]procStat{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readProcStat(pid); ok {
			procs[pid] = st
		}
	}
	return procs
}

// readProcStat parses /proc/PID/stat: "pid (comm) state ppid ...", where
// comm may hold spaces and parentheses.
func readProcStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	return procStat{state: f[0][0], ppid: ppid}, true
}
