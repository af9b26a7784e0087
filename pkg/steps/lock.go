package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/relaydev/relay/internal/backoff"
)

// LockHolder says who holds a state's lock; it is written into the lock file so a second
// run can name the holder.
type LockHolder struct {
	PID       int       `json:"pid"`
	Host      string    `json:"host"`
	StartedAt time.Time `json:"started_at"`
	Command   string    `json:"command,omitempty"`
}

func (h LockHolder) String() string {
	s := fmt.Sprintf("pid %d on %s, started %s", h.PID, h.Host, h.StartedAt.UTC().Format(time.RFC3339))
	if h.Command != "" {
		s += " (" + h.Command + ")"
	}
	return s
}

// LockedError is a state another run holds; the CLI maps it to exit code 2.
type LockedError struct {
	Path   string
	Holder *LockHolder // nil when the holder did not say who it is
	Waited time.Duration
}

func (e *LockedError) Error() string {
	who := "another relay process"
	if e.Holder != nil {
		who = e.Holder.String()
	}
	msg := fmt.Sprintf("state %s is in use by %s", e.Path, who)
	if e.Waited > 0 {
		msg += fmt.Sprintf(" (waited %s)", e.Waited)
	}
	return msg + " (fix: let that run finish, pass --wait-lock DURATION to wait for it, or use another --state)"
}

// LockOptions configure LockState.
type LockOptions struct {
	// Wait is how long to wait for another run to finish; 0 fails at once.
	Wait    time.Duration
	Command string
	Now     func() time.Time
	// Sleep waits between attempts (tests make it instant).
	Sleep func(ctx context.Context, d time.Duration) error
}

// StateLock is an exclusive hold on a state file for one run.
type StateLock struct {
	f    *os.File
	path string
}

// LockState takes the exclusive lock of the state at statePath (STATE.lock beside it) for
// the whole run. The lock is the kernel's (flock): it is released on every way out of the
// process, SIGKILL included, so a dead holder's lock never blocks the next run; the file's
// content only names the latest holder.
func LockState(ctx context.Context, statePath string, o LockOptions) (*StateLock, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = backoff.Sleep
	}
	path := statePath + ".lock"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, &StateError{Path: statePath, Msg: "cannot create its directory: " + err.Error(), Fix: "check the permissions of the --state directory"}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, &StateError{Path: statePath, Msg: "cannot open its lock file: " + err.Error(), Fix: "check the permissions of the --state directory"}
	}
	start := o.Now()
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		busy, err := tryLock(f)
		if err == nil {
			break
		}
		if !busy {
			f.Close()
			return nil, &StateError{Path: statePath, Msg: "cannot lock it: " + err.Error(), Fix: "keep --state on a local file system that supports flock"}
		}
		waited := o.Now().Sub(start)
		if waited >= o.Wait {
			holder := readHolder(path)
			f.Close()
			return nil, &LockedError{Path: statePath, Holder: holder, Waited: waited}
		}
		if serr := o.Sleep(ctx, min(delay, o.Wait-waited)); serr != nil {
			f.Close()
			return nil, ErrInterrupted
		}
	}
	host, _ := os.Hostname()
	h := LockHolder{PID: os.Getpid(), Host: host, StartedAt: o.Now().UTC(), Command: o.Command}
	b, _ := json.Marshal(h)
	// Written in place (the lock is on this inode, so no rename); a reader may see it torn
	// only while the holder starts, and then names "another relay process".
	if err := f.Truncate(0); err == nil {
		f.WriteAt(append(b, '\n'), 0)
	}
	return &StateLock{f: f, path: path}, nil
}

// Unlock releases the lock. The file stays: removing it would let a waiter lock an inode
// that a third run no longer sees.
func (l *StateLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}

func readHolder(path string) *LockHolder {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var h LockHolder
	if json.Unmarshal(b, &h) != nil || h.PID == 0 {
		return nil
	}
	return &h
}
