//go:build unix && !linux

package pgtest

import "syscall"

// sysProcAttr: without Pdeathsig outside Linux, servers outlive a test binary
// that dies without calling Stop.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: cred,
	}
}
