//go:build unix

package workload

import (
	"os"
	"os/exec"
	"syscall"
)

// newProcessGroup puts the command in a process group of its own, so that
// signals reach what the shell started too (pgbench under sh -c).
func newProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

func signalGroup(p *os.Process, sig syscall.Signal) {
	// The group's id is the leader's pid; a negative pid signals the group.
	_ = syscall.Kill(-p.Pid, sig)
}

func stopGroup(p *os.Process)     { signalGroup(p, syscall.SIGSTOP) }
func continueGroup(p *os.Process) { signalGroup(p, syscall.SIGCONT) }

// terminateGroup asks the group to exit; a stopped (paused) group must be
// continued to see it.
func terminateGroup(p *os.Process) {
	signalGroup(p, syscall.SIGTERM)
	signalGroup(p, syscall.SIGCONT)
}

func killGroup(p *os.Process) { signalGroup(p, syscall.SIGKILL) }
