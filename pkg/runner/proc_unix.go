//go:build unix

package runner

import (
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// ownProcessGroup starts cmd in a process group of its own, so a signal reaches run.sh and
// the listener it starts.
func ownProcessGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// signalGroup sends SIGTERM (or SIGKILL) to cmd's process group.
func signalGroup(cmd *exec.Cmd, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	syscall.Kill(-cmd.Process.Pid, sig)
}

func notifyChildExit(c chan os.Signal) { signal.Notify(c, syscall.SIGCHLD) }

func (rp *reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		code := ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		rp.mu.Lock()
		if w, ok := rp.waiters[pid]; ok {
			w <- code
			delete(rp.waiters, pid)
		} else {
			rp.status[pid] = code
		}
		rp.mu.Unlock()
		if rp.orphan != nil && pid != rp.child() {
			rp.orphan(pid, code)
		}
	}
}
