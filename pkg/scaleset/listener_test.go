package scaleset

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

// fakeStarter records every start; executions run until the test finishes them.
type fakeStarter struct {
	mu      sync.Mutex
	running map[string]Execution
	jit     map[string]bool
	starts  int
	started chan string
	fail    error
}

func newStarter() *fakeStarter {
	return &fakeStarter{running: map[string]Execution{}, jit: map[string]bool{}, started: make(chan string, 1000)}
}

func (f *fakeStarter) Start(_ context.Context, runner, jit string) (Execution, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return Execution{}, f.fail
	}
	if f.jit[jit] {
		return Execution{}, fmt.Errorf("JIT config handed out twice")
	}
	f.jit[jit] = true
	f.starts++
	e := Execution{Name: "exec-" + runner, Runner: runner}
	f.running[e.Name] = e
	f.started <- runner
	return e, nil
}

func (f *fakeStarter) Running(context.Context) ([]Execution, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Execution
	for _, e := range f.running {
		out = append(out, e)
	}
	return out, nil
}

func (f *fakeStarter) finishAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = map[string]Execution{}
}

func (f *fakeStarter) wait(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-f.started:
		case <-time.After(10 * time.Second): // a guard against a hang, not synchronisation
			t.Fatalf("only %d of %d executions started", i, n)
		}
	}
}

type listenerRig struct {
	b       *testutil.Broker
	c       *Client
	ss      *ScaleSet
	starter *fakeStarter
	names   int
	mu      sync.Mutex
}

func newRig(t *testing.T) *listenerRig {
	b := testutil.StartBroker(t)
	b.PollTimeout = 20 * time.Millisecond
	c, _ := newTestClient(t, b, &clock{t: time.Now()})
	ss, err := c.CreateScaleSet(context.Background(), ScaleSet{Name: "relay", RunnerGroupID: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerRig{b: b, c: c, ss: ss, starter: newStarter()}
}

func (r *listenerRig) opts(max int) ListenerOptions {
	return ListenerOptions{Client: r.c, ScaleSetID: r.ss.ID, Owner: "listener", MaxRunners: max, Starter: r.starter,
		RunnerName: func() string { r.mu.Lock(); defer r.mu.Unlock(); r.names++; return fmt.Sprintf("relay-%d", r.names) },
		Sleep:      func(ctx context.Context, _ time.Duration) error { return ctx.Err() }}
}

// run starts Listen and returns a stop that cancels it and returns its error.
func (r *listenerRig) run(o ListenerOptions) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Listen(ctx, o) }()
	return func() error { cancel(); return <-done }
}

func sessionsDeleted(b *testutil.Broker) int {
	n := 0
	for _, r := range b.Requests() {
		if strings.HasPrefix(r, "DELETE ") && strings.Contains(r, "/sessions/") {
			n++
		}
	}
	return n
}

// TestListenStartsOneExecutionPerJob: one job, one execution with a JIT config the broker
// made; a burst of 50 (one broker message), 50 more, each config distinct; stopping deletes
// the session and returns nil.
func TestListenStartsOneExecutionPerJob(t *testing.T) {
	r := newRig(t)
	stop := r.run(r.opts(100))
	r.b.QueueJobs(r.ss.ID, 1)
	r.starter.wait(t, 1)
	r.b.QueueJobs(r.ss.ID, 50)
	r.starter.wait(t, 50)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if r.starter.starts != 51 || len(r.starter.jit) != 51 {
		t.Fatalf("%d starts, %d distinct configs", r.starter.starts, len(r.starter.jit))
	}
	for jit := range r.starter.jit {
		if r.b.Runner(jit) == 0 {
			t.Fatal("an execution got a JIT config the broker never made")
		}
	}
	if sessionsDeleted(r.b) != 1 {
		t.Fatalf("session deleted %d times", sessionsDeleted(r.b))
	}
}

// TestListenCapsAndRestarts: max runners caps the executions; once they finish the rest
// start; a restarted listener counts what already runs and starts none twice.
func TestListenCapsAndRestarts(t *testing.T) {
	r := newRig(t)
	stop := r.run(r.opts(4))
	r.b.QueueJobs(r.ss.ID, 10)
	r.starter.wait(t, 4)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if r.starter.starts != 4 {
		t.Fatalf("%d starts with max runners 4", r.starter.starts)
	}
	// Restarted: the four still run, so nothing starts until jobs complete.
	stop = r.run(r.opts(4))
	r.b.CompleteJobs(r.ss.ID, 4)
	r.starter.finishAll()
	r.b.QueueJobs(r.ss.ID, 0) // a message, so the listener reconciles
	r.starter.wait(t, 4)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if r.starter.starts != 8 {
		t.Fatalf("%d starts after the first four finished, want 8", r.starter.starts)
	}
}

// TestListenWaitsOutConflictsAndFailures: a session another listener holds is retaken
// once freed; the service failing (503) is retried, within the budget; a deleted scale set
// ends Listen with the error to recreate it.
func TestListenWaitsOutConflictsAndFailures(t *testing.T) {
	r := newRig(t)
	other, err := r.c.OpenSession(context.Background(), r.ss.ID, "other")
	if err != nil {
		t.Fatal(err)
	}
	o := r.opts(10)
	sleeps := 0
	o.Sleep = func(ctx context.Context, _ time.Duration) error {
		sleeps++
		if sleeps == 1 {
			other.Close(ctx) // the other listener goes away while this one waits
		}
		return ctx.Err()
	}
	stop := r.run(o)
	r.b.QueueJobs(r.ss.ID, 2)
	r.starter.wait(t, 2)
	r.b.FailNext(3)
	r.b.QueueJobs(r.ss.ID, 1)
	r.starter.wait(t, 1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if sleeps < 2 {
		t.Fatalf("%d pauses: the conflict and the failures were not waited out", sleeps)
	}

	// Gone: Listen says so and ends.
	r.b.DeleteScaleSet(r.ss.ID)
	err = Listen(context.Background(), r.opts(10))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "recreate it") {
		t.Fatalf("deleted scale set: %v", err)
	}
}

// TestListenGivesUpPastTheBudget: a service that keeps failing ends Listen once the budget
// is spent (no crash loop), with the last error.
func TestListenGivesUpPastTheBudget(t *testing.T) {
	r := newRig(t)
	clk := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	o := r.opts(10)
	o.Now, o.Budget = clk.now, time.Minute
	o.Sleep = func(ctx context.Context, d time.Duration) error { clk.add(20 * time.Second); return ctx.Err() }
	r.b.FailNext(1 << 20)
	err := Listen(context.Background(), o)
	var se *Error
	if err == nil || !strings.Contains(err.Error(), "kept failing for 1m0s") || !errors.As(err, &se) || se.Status != 503 {
		t.Fatalf("%v", err)
	}
}
