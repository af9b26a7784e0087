//go:build !unix

package runner

import (
	"os"
	"os/exec"
)

// relay runner is a Linux container's ENTRYPOINT; elsewhere (relay's Windows build, which
// releases and verifies) it has no process groups to manage and no orphans to reap.

func ownProcessGroup(*exec.Cmd) {}

func signalGroup(cmd *exec.Cmd, _ bool) { cmd.Process.Kill() }

func notifyChildExit(chan os.Signal) {}

func (rp *reaper) reapAll() {}
