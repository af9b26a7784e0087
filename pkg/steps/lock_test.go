package steps

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// Re-executed by TestStaleLockOfKilledHolder as the holder that gets SIGKILLed.
	if p := os.Getenv("RELAY_TEST_HOLD_LOCK"); p != "" {
		if _, err := LockState(context.Background(), p, LockOptions{Command: "holder"}); err != nil {
			os.Stdout.WriteString("error " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("locked\n")
		select {} // until killed
	}
	os.Exit(m.Run())
}

func TestStateLockIsExclusive(t *testing.T) {
	ctx := context.Background()
	state := filepath.Join(t.TempDir(), ".relay", "state.json")
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	first, err := LockState(ctx, state, LockOptions{Command: "relay run", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockState(ctx, state, LockOptions{Command: "relay run"})
	var le *LockedError
	if !errors.As(err, &le) || le.Holder == nil || le.Holder.PID != os.Getpid() || !le.Holder.StartedAt.Equal(now) {
		t.Fatalf("second lock: %v", err)
	}
	host, _ := os.Hostname()
	for _, want := range []string{state, "pid ", host, "2026-12-02T10:00:00Z", "relay run", "--wait-lock"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}

	// --wait-lock: the holder finishes while the second run waits.
	var waits []time.Duration
	clock := now
	second, err := LockState(ctx, state, LockOptions{Wait: time.Minute, Now: func() time.Time { return clock },
		Sleep: func(_ context.Context, d time.Duration) error {
			waits = append(waits, d)
			clock = clock.Add(d)
			if len(waits) == 3 {
				first.Unlock()
			}
			return nil
		}})
	if err != nil || len(waits) != 3 {
		t.Fatalf("waiting for the lock: %v after %v", err, waits)
	}
	if waits[0] != 100*time.Millisecond || waits[1] != 200*time.Millisecond {
		t.Fatalf("waits %v: want a growing backoff", waits)
	}

	// A wait that runs out names the holder and how long it waited.
	clock = now
	_, err = LockState(ctx, state, LockOptions{Wait: time.Second, Now: func() time.Time { return clock },
		Sleep: func(_ context.Context, d time.Duration) error { clock = clock.Add(d); return nil }})
	if !errors.As(err, &le) || le.Waited != time.Second || !strings.Contains(err.Error(), "waited 1s") {
		t.Fatalf("timed-out wait: %v", err)
	}
	// Interrupted while waiting.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := LockState(cctx, state, LockOptions{Wait: time.Minute}); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("cancelled wait: %v", err)
	}
	second.Unlock()
	third, err := LockState(ctx, state, LockOptions{})
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	third.Unlock()
}

func TestStaleLockOfKilledHolder(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RELAY_TEST_HOLD_LOCK="+state)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "locked\n" {
		cmd.Process.Kill()
		t.Fatalf("holder: %q", line)
	}
	_, err = LockState(context.Background(), state, LockOptions{})
	var le *LockedError
	if !errors.As(err, &le) || le.Holder == nil || le.Holder.PID != cmd.Process.Pid || le.Holder.Command != "holder" {
		cmd.Process.Kill()
		t.Fatalf("while the holder lives: %v", err)
	}
	cmd.Process.Kill() // SIGKILL: no clean-up runs in the holder
	cmd.Wait()
	l, err := LockState(context.Background(), state, LockOptions{})
	if err != nil {
		t.Fatalf("a SIGKILLed holder's lock blocks the next run: %v", err)
	}
	l.Unlock()
}
