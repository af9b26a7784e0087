package scaleset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

// fakeStarter records every start; executions run until the test finishes them.
type fakeStarter struct {
	mu        sync.Mutex
	running   map[string]Execution
	jit       map[string]bool
	jitOf     map[string]string // execution -> its config
	starts    int
	started   chan string
	stopped   chan string
	released  map[string]bool
	fail      error
	now       func() time.Time
	onRelease func(name string)
	gate      chan struct{} // when not nil, each Start waits for it (outside the lock)
	lists     chan struct{} // a signal per Running call, when not nil
}

func newStarter() *fakeStarter {
	return &fakeStarter{running: map[string]Execution{}, jit: map[string]bool{}, jitOf: map[string]string{}, released: map[string]bool{},
		started: make(chan string, 1000), stopped: make(chan string, 1000), now: time.Now}
}

func (f *fakeStarter) Stop(_ context.Context, e Execution) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, e.Name)
	f.stopped <- e.Name
	return nil
}

func (f *fakeStarter) Release(_ context.Context, e Execution) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.released[e.Name] {
		return fmt.Errorf("%s released twice", e.Name)
	}
	f.released[e.Name] = true
	if f.onRelease != nil {
		f.onRelease(e.Name)
	}
	return nil
}

func (f *fakeStarter) config(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jitOf[name]
}

func (f *fakeStarter) finish(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, name)
}

func (f *fakeStarter) Start(ctx context.Context, r Runner, jit string) (Execution, error) {
	if f.gate != nil {
		f.started <- "waiting"
		<-f.gate
		if ctx.Err() != nil {
			return Execution{}, ctx.Err() // a start cut short by the listener stopping
		}
	}
	runner := r.Name
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
	e := Execution{Name: "exec-" + runner, Runner: runner, RunnerID: r.ID, Started: f.now()}
	f.running[e.Name] = e
	f.jitOf[e.Name] = jit
	f.started <- runner
	return e, nil
}

func (f *fakeStarter) Running(context.Context) ([]Execution, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lists != nil {
		select {
		case f.lists <- struct{}{}:
		default:
		}
	}
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

// TestListenStopsWhatNeverRegisters: a runner that takes its job has its config released
// at once; an execution whose runner took none within the register timeout has its runner
// removed and is stopped, and the job still waiting gets a new execution; an execution that
// ended after its job removes nothing (the ephemeral runner is gone).
func TestListenStopsWhatNeverRegisters(t *testing.T) {
	r := newRig(t)
	clk := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	r.starter.now = clk.now
	released := make(chan string, 10)
	r.starter.onRelease = func(name string) { released <- name }
	logs := &testutil.SyncBuffer{}
	o := r.opts(10)
	o.Now, o.RegisterTimeout = clk.now, 5*time.Minute
	o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	o.Metrics = NewMetrics("relay")
	stop := r.run(o)
	r.b.QueueJobs(r.ss.ID, 2)
	r.starter.wait(t, 2)

	jit1 := r.starter.config("exec-relay-1")
	if err := r.b.TakeJob(jit1); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, released); got != "exec-relay-1" {
		t.Fatalf("released %s, want the runner that took its job", got)
	}
	clk.add(6 * time.Minute)
	if got := recv(t, r.starter.stopped); got != "exec-relay-2" {
		t.Fatalf("stopped %s", got)
	}
	if got := recv(t, released); got != "exec-relay-2" {
		t.Fatalf("released %s after the stop", got)
	}
	r.starter.wait(t, 1) // the job runner 2 never took
	if r.b.Waiting(r.ss.ID) != 1 || r.b.Runner(r.starter.config("exec-relay-3")) == 0 {
		t.Fatal("the waiting job got no new runner")
	}
	if err := r.b.TakeJob(r.starter.config("exec-relay-2")); err == nil {
		t.Fatal("the stopped execution's runner could still take a job")
	}
	lists := make(chan struct{}, 1)
	r.starter.mu.Lock()
	r.starter.lists = lists
	r.starter.mu.Unlock()
	r.b.FinishJob(jit1, "succeeded")
	r.starter.finish("exec-relay-1")
	for i := 0; i < 2; i++ { // the second listing begins after the first reconcile ended
		select {
		case <-lists:
		case <-time.After(10 * time.Second): // a guard against a hang, not synchronisation
			t.Fatal("the listener stopped reconciling")
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{`"event":"execution.stopped","execution":"exec-relay-2"`, `"event":"runner.removed","runner":"relay-2"`,
		`"reason":"it took no job within the register timeout"`, `"event":"job.started","runner":"relay-1"`,
		`"event":"execution.finished","execution":"exec-relay-1","runner":"relay-1","runner_id":100,"took_job":true`} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in\n%s", want, out)
		}
	}
	if strings.Count(out, `"event":"runner.removed"`) != 1 {
		t.Errorf("runners removed: %d, want only the one that never registered", strings.Count(out, `"event":"runner.removed"`))
	}
	if o.Metrics.Value("stopped") != 1 || o.Metrics.Value("started") != 3 || o.Metrics.Value("runners_removed") != 1 {
		t.Errorf("metrics: stopped %v started %v removed %v", o.Metrics.Value("stopped"), o.Metrics.Value("started"), o.Metrics.Value("runners_removed"))
	}
}

// TestNeverRegisteredButBusy: a runner the listener did not see take a job (it restarted)
// but that runs one is not removed, nor its execution stopped.
func TestNeverRegisteredButBusy(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	s, err := r.c.OpenSession(ctx, r.ss.ID, "listener")
	if err != nil {
		t.Fatal(err)
	}
	r.b.QueueJobs(r.ss.ID, 1)
	m, _ := s.Message(ctx, 0, 1)
	s.Acquire(ctx, []int64{m.Available[0].RunnerRequestID})
	jit, err := r.c.JITConfig(ctx, r.ss.ID, "relay-9")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.b.TakeJob(jit.Encoded); err != nil {
		t.Fatal(err)
	}
	e, _ := r.starter.Start(ctx, *jit.Runner, jit.Encoded)
	l := &listener{o: r.opts(1), tracked: map[string]*tracked{}}
	l.o.Logger = slog.New(slog.DiscardHandler)
	tr := &tracked{e: e}
	l.neverRegistered(ctx, tr)
	if !tr.busy || tr.removed || len(r.starter.stopped) != 0 || r.b.Registered() != 1 || !r.starter.released[e.Name] {
		t.Fatalf("busy runner: %+v, %d stopped, %d registered", tr, len(r.starter.stopped), r.b.Registered())
	}
}

// TestListenerMetrics: the text exposition has the gauges, counters and the latency
// histogram, labelled by scale set alone.
func TestListenerMetrics(t *testing.T) {
	r := newRig(t)
	o := r.opts(10)
	o.Metrics = NewMetrics("relay")
	stop := r.run(o)
	r.b.QueueJobs(r.ss.ID, 3)
	r.starter.wait(t, 3)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	o.Metrics.WriteTo(&b)
	out := b.String()
	for _, want := range []string{
		"# TYPE relay_listener_assigned_jobs gauge\nrelay_listener_assigned_jobs{scale_set=\"relay\"} 3\n",
		"relay_listener_running_executions{scale_set=\"relay\"} 3\n",
		"relay_listener_started_total{scale_set=\"relay\"} 3\n",
		"relay_listener_start_latency_seconds_bucket{scale_set=\"relay\",le=\"+Inf\"} 3\n",
		"relay_listener_start_latency_seconds_count{scale_set=\"relay\"} 3\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "relay-1") || strings.Contains(out, "exec-") {
		t.Errorf("a runner or execution name in a metric:\n%s", out)
	}
}

func recv(t *testing.T, c chan string) string {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second): // a guard against a hang, not synchronisation
		t.Fatal("nothing came")
		return ""
	}
}

// TestListenBeforeMint: a refusal before minting (a runner version GitHub refuses) ends
// Listen with it, and no JIT config is minted.
func TestListenBeforeMint(t *testing.T) {
	r := newRig(t)
	o := r.opts(10)
	refused := errors.New("runner 2.300.0 is more than 30 days behind")
	o.BeforeMint = func(context.Context) error { return refused }
	r.b.QueueJobs(r.ss.ID, 2)
	if err := Listen(context.Background(), o); !errors.Is(err, refused) {
		t.Fatalf("%v", err)
	}
	if r.starter.starts != 0 || r.b.Registered() != 0 {
		t.Fatalf("%d starts, %d runners minted", r.starter.starts, r.b.Registered())
	}
	if sessionsDeleted(r.b) != 1 {
		t.Fatal("the session was not deleted")
	}
}

// TestListenRidesOutAnOutage: the service answering 503 for a minute (within the budget)
// and a queue token that expired mid-session: the listener keeps its session, and the jobs
// queued meanwhile still get one execution each.
func TestListenRidesOutAnOutage(t *testing.T) {
	r := newRig(t)
	clk := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	o := r.opts(10)
	o.Now = clk.now
	r.starter.now = clk.now
	pauses := 0
	o.Sleep = func(ctx context.Context, d time.Duration) error {
		pauses++
		clk.add(15 * time.Second)
		return ctx.Err()
	}
	stop := r.run(o)
	r.b.QueueJobs(r.ss.ID, 1)
	r.starter.wait(t, 1)
	r.b.FailNext(5) // five failed calls, fifteen seconds apart: over a minute down
	r.b.ExpireQueueTokens()
	r.b.QueueJobs(r.ss.ID, 2)
	r.starter.wait(t, 2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if pauses < 4 || r.starter.starts != 3 {
		t.Fatalf("%d pauses, %d starts", pauses, r.starter.starts)
	}
	opened := 0
	for _, q := range r.b.Requests() {
		if strings.HasPrefix(q, "POST ") && strings.HasSuffix(q, "/sessions") {
			opened++
		}
	}
	if opened != 1 {
		t.Fatalf("%d sessions opened: the outage cost the session", opened)
	}
}

// TestStopDoesNotCutAStartShort: SIGTERM while an execution is being started lets that
// start finish (a start abandoned halfway could leave a running execution the listener then
// undoes); nothing more starts, and Listen returns nil.
func TestStopDoesNotCutAStartShort(t *testing.T) {
	r := newRig(t)
	r.starter.gate = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Listen(ctx, r.opts(10)) }()
	r.b.QueueJobs(r.ss.ID, 3)
	if got := recv(t, r.starter.started); got != "waiting" {
		t.Fatalf("%s", got)
	}
	cancel()                     // SIGTERM while the first start is under way
	r.starter.gate <- struct{}{} // the platform answers
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.starter.starts != 1 || r.b.Registered() != 1 {
		t.Fatalf("%d starts, %d runners registered: the start in flight was undone or more started", r.starter.starts, r.b.Registered())
	}
}
