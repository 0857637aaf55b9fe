package pgtest

import "syscall"

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
