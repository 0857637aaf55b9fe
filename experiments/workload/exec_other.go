//go:build !unix

package workload

import (
	"os"
	"os/exec"
)

// Without process groups and job control signals, only the shell itself is
// signalled, and pausing a command is not possible.

func newProcessGroup(*exec.Cmd) {}

func stopGroup(*os.Process)     {}
func continueGroup(*os.Process) {}

func terminateGroup(p *os.Process) { _ = p.Kill() }

func killGroup(p *os.Process) { _ = p.Kill() }
