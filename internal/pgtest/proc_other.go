//go:build unix && !linux

package pgtest

import (
	"errors"
	"syscall"
)

// sysProcAttr: without Pdeathsig outside Linux, servers outlive a test binary
// that dies without calling Stop.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: cred,
	}
}

// killTree kills pid and its process group. Without /proc to find the
// postmaster's children (each in a session of its own), backends outlive
// it until they notice that it died.
func killTree(pid int) ([]int, error) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return nil, err
	}
	return []int{pid}, nil
}

// aliveOf returns those of pids that still exist, zombies included.
func aliveOf(pids []int) []int {
	var alive []int
	for _, p := range pids {
		if err := syscall.Kill(p, 0); err == nil || errors.Is(err, syscall.EPERM) {
			alive = append(alive, p)
		}
	}
	return alive
}
