package scaleset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"slices"
	"time"

	"github.com/relaydev/relay/internal/backoff"
)

// Starter starts the runner containers: one execution per runner, each handed its own
// single-use JIT config (Azure Container Apps jobs, Kubernetes Jobs).
type Starter interface {
	// Start starts an execution that runs the runner the JIT config registers.
	Start(ctx context.Context, runner Runner, jitConfig string) (Execution, error)
	// Running lists the executions this listener's starter started that have not ended:
	// the platform's truth, so a restarted listener starts none twice.
	Running(ctx context.Context) ([]Execution, error)
	// Stop ends an execution (its runner never registered); one already ended is no error.
	Stop(ctx context.Context, e Execution) error
}

// Releaser is a starter that keeps each JIT config outside its execution (a Key Vault
// secret): Release deletes it once the runner needs it no more, because the runner took a
// job, or its execution ended or was stopped.
type Releaser interface {
	Release(ctx context.Context, e Execution) error
}

// Execution is one started runner container.
type Execution struct {
	Name     string    // the platform's name of the execution
	Runner   string    // the runner it registers
	RunnerID int64     // and that runner's id
	Started  time.Time // when the platform started it
}

// ListenerOptions configure Listen.
type ListenerOptions struct {
	Client     *Client
	ScaleSetID int
	Owner      string // the session's owner: this listener's name
	MaxRunners int    // never more executions running at once
	Starter    Starter
	// RunnerName names the next runner (unique per call), e.g. the scale set's name and a counter.
	RunnerName func() string
	// RegisterTimeout: an execution whose runner has taken no job this long after its start
	// is stopped and its runner removed (default 10m: image pull and runner start-up).
	RegisterTimeout time.Duration
	Metrics         *Metrics // optional
	// BeforeMint, when set, is asked before JIT configs are minted (the runner version
	// check): an error ends Listen, for no config should be minted for a runner GitHub
	// refuses.
	BeforeMint func(ctx context.Context) error
	Logger     *slog.Logger
	// Sleep waits between retries (backoff.Sleep unless a test says); Budget bounds how long
	// the service may keep failing (5xx, network) before Listen gives up (default 10m).
	Sleep  func(ctx context.Context, d time.Duration) error
	Budget time.Duration
	Now    func() time.Time
}

// Listen holds the scale set's session and keeps one execution running per assigned job,
// until ctx ends; then it deletes the session and returns nil. It decides from the
// broker's statistics (assigned jobs minus executions still running), never from events
// alone: the broker acknowledges before the handler runs, and batches 50 per message.
func Listen(ctx context.Context, o ListenerOptions) error {
	if o.Client == nil || o.Starter == nil || o.RunnerName == nil || o.MaxRunners < 1 || o.ScaleSetID == 0 {
		return errors.New("scale set listener: needs a client, a starter, runner names, a scale set and max runners of at least 1")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Sleep == nil {
		o.Sleep = backoff.Sleep
	}
	if o.Budget == 0 {
		o.Budget = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RegisterTimeout == 0 {
		o.RegisterTimeout = 10 * time.Minute
	}
	l := &listener{o: o, rand: rand.New(rand.NewSource(o.Now().UnixNano())), tracked: map[string]*tracked{}}
	for {
		err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := l.pause(ctx, err); err != nil {
			return err
		}
	}
}

type listener struct {
	o        ListenerOptions
	rand     *rand.Rand
	failedAt time.Time // when the current run of failures began
	attempt  int
	// tracked are the executions running, by name, across sessions; assignedAt the
	// arrival of assignments no execution covers yet, oldest first (for the latency).
	tracked    map[string]*tracked
	assignedAt []time.Time
}

// tracked is what the listener knows of an execution beyond the platform's listing.
type tracked struct {
	e        Execution
	busy     bool // its runner took a job
	released bool // its JIT config is no longer kept
	removed  bool // its runner was removed, so the execution is to be stopped
	stopped  bool
}

// fatalError ends Listen at once.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// pause waits after a failure, or gives up: a scale set that is gone, or a service that
// kept failing past the budget.
func (l *listener) pause(ctx context.Context, err error) error {
	var fe *fatalError
	switch {
	case errors.As(err, &fe):
		return fe.err
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("scale set %d: %w (it was deleted: recreate it)", l.o.ScaleSetID, err)
	case errors.Is(err, ErrSessionGone):
		l.o.Logger.Warn("the message session is gone: opening a new one", "event", "session.lost", "error", err)
	case errors.Is(err, ErrSessionConflict):
		l.o.Logger.Warn("another listener holds the session: waiting to take it", "event", "session.conflict", "error", err)
	default:
		if l.failedAt.IsZero() {
			l.failedAt = l.o.Now()
		}
		if l.o.Now().Sub(l.failedAt) > l.o.Budget {
			return fmt.Errorf("scale set service kept failing for %s: %w", l.o.Budget, err)
		}
		l.o.Logger.Warn("scale set service failed: reconciling again after a pause", "event", "listener.retry", "error", err, "attempt", l.attempt+1)
	}
	l.o.Metrics.add("failures")
	l.attempt++
	return l.o.Sleep(ctx, backoff.Equal(l.rand, time.Second, l.attempt))
}

// session opens the session and serves it until ctx's end. A failure inside it keeps the
// session (deleting it could fail too, and leave the next open a 409): after a pause it
// reconciles again and re-polls from the last acknowledged message, which the broker then
// sends again if it was not acknowledged.
func (l *listener) session(ctx context.Context) error {
	s, err := l.o.Client.OpenSession(ctx, l.o.ScaleSetID, l.o.Owner)
	if err != nil {
		return err
	}
	l.o.Logger.Info("session opened", "event", "session.opened", "session", s.ID())
	defer func() {
		// The next listener may take the session at once; the platform's grace is short.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := s.Close(cctx); err != nil {
			l.o.Logger.Warn("deleting the session failed", "error", err)
		} else {
			l.o.Logger.Info("session deleted", "event", "session.deleted")
		}
	}()
	st := &serving{stats: s.Statistics(), fresh: true}
	for ctx.Err() == nil {
		err := l.step(ctx, s, st)
		switch {
		case err == nil:
			l.failedAt, l.attempt = time.Time{}, 0
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrSessionGone), errors.As(err, new(*fatalError)):
			return err // a new session, the scale set is gone, or the end
		default:
			if perr := l.pause(ctx, err); perr != nil {
				return perr
			}
			st.fresh = true
		}
	}
	return nil
}

// serving is where a session stands: the last acknowledged message, the broker's last
// statistics, the executions running, and whether to reconcile before the next poll.
type serving struct {
	last    int
	stats   *Statistics
	running int
	fresh   bool
}

// step polls once and acts on what came: acquire what is available, note which runners
// took jobs, start what is assigned (from the statistics), acknowledge. An empty poll
// reconciles too: executions end, and runners that never registered time out.
func (l *listener) step(ctx context.Context, s *Session, st *serving) error {
	if st.fresh {
		n, err := l.reconcile(ctx, st.stats)
		if err != nil {
			return err
		}
		st.running, st.fresh = n, false
	}
	m, err := s.Message(ctx, st.last, max(l.o.MaxRunners-st.running, 0))
	if err != nil {
		return err
	}
	if m == nil {
		st.running, err = l.reconcile(ctx, st.stats)
		return err
	}
	if len(m.Available) > 0 {
		var ids []int64
		for _, j := range m.Available {
			ids = append(ids, j.RunnerRequestID)
		}
		got, err := s.Acquire(ctx, ids)
		if err != nil {
			return err
		}
		l.o.Logger.Info("jobs acquired", "event", "jobs.acquired", "available", len(ids), "acquired", len(got))
	}
	if len(m.Assigned) > 0 {
		l.o.Logger.Info("jobs assigned", "event", "jobs.assigned", "count", len(m.Assigned))
		for range m.Assigned {
			l.assignedAt = append(l.assignedAt, l.o.Now())
		}
	}
	for _, j := range m.Started {
		l.o.Logger.Info("job started", "event", "job.started", "runner", j.RunnerName, "runner_id", j.RunnerID, "job_id", j.JobID)
		for _, t := range l.tracked {
			if t.e.Runner == j.RunnerName && !t.busy {
				t.busy = true
				l.release(ctx, t)
			}
		}
	}
	for _, j := range m.Completed {
		l.o.Logger.Info("job completed", "event", "job.completed", "runner", j.RunnerName, "runner_id", j.RunnerID, "job_id", j.JobID, "result", j.Result)
	}
	if m.Statistics != nil {
		st.stats = m.Statistics
	}
	n, err := l.reconcile(ctx, st.stats)
	if err != nil {
		return err
	}
	st.running = n
	if err := s.Ack(ctx, m.ID); err != nil {
		return err
	}
	st.last = m.ID
	return nil
}

// reconcile brings the tracked executions in line with the platform's, stops those whose
// runner never registered, and starts executions until those running cover the assigned
// jobs, within the cap; it returns how many run.
func (l *listener) reconcile(ctx context.Context, st *Statistics) (int, error) {
	running, err := l.o.Starter.Running(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing running executions: %w", err)
	}
	seen := map[string]bool{}
	for _, e := range running {
		seen[e.Name] = true
		if l.tracked[e.Name] == nil { // started before a restart
			l.tracked[e.Name] = &tracked{e: e}
		}
	}
	for _, name := range l.names() {
		if t := l.tracked[name]; !seen[name] {
			l.finished(ctx, t)
			delete(l.tracked, name)
		} else if !t.busy && l.o.Now().Sub(t.e.Started) >= l.o.RegisterTimeout {
			l.neverRegistered(ctx, t)
		}
	}
	n := len(l.tracked)
	defer func() { l.o.Metrics.gauges(st, len(l.tracked)) }()
	if st == nil {
		return n, nil
	}
	want := min(st.TotalAssignedJobs, l.o.MaxRunners)
	if n < want && l.o.BeforeMint != nil {
		if err := l.o.BeforeMint(ctx); err != nil {
			return n, &fatalError{err}
		}
	}
	for ; n < want; n++ {
		if err := ctx.Err(); err != nil {
			return n, err // stopping: start nothing more
		}
		e, jit, err := l.start(ctx)
		if err != nil {
			return n, err
		}
		name := jit.Runner.Name
		if e.Started.IsZero() {
			e.Started = l.o.Now()
		}
		if e.RunnerID == 0 {
			e.RunnerID = jit.Runner.ID
		}
		l.tracked[e.Name] = &tracked{e: e}
		var latency time.Duration
		known := len(l.assignedAt) > 0
		if known {
			latency, l.assignedAt = l.o.Now().Sub(l.assignedAt[0]), l.assignedAt[1:]
		}
		l.o.Metrics.started(latency, known)
		l.o.Logger.Info("execution started", "event", "execution.started", "execution", e.Name, "runner", name, "runner_id", jit.Runner.ID)
	}
	// Assignments beyond what runs are waiting (the cap) or were cancelled: keep the newest.
	if extra := len(l.assignedAt) - max(st.TotalAssignedJobs-n, 0); extra > 0 {
		l.assignedAt = l.assignedAt[extra:]
	}
	if st.TotalAssignedJobs > l.o.MaxRunners {
		l.o.Logger.Warn("more jobs assigned than max runners: the rest wait", "event", "listener.capped", "assigned", st.TotalAssignedJobs, "max_runners", l.o.MaxRunners)
	}
	return n, nil
}

// start mints a runner's JIT config and starts its execution. Once begun it is not cut
// short by the listener stopping: a start abandoned halfway could leave a running
// execution behind that the listener then undoes (or a Job without its Secret).
func (l *listener) start(ctx context.Context) (Execution, *JITConfig, error) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	name := l.o.RunnerName()
	jit, err := l.o.Client.JITConfig(sctx, l.o.ScaleSetID, name)
	if err != nil {
		return Execution{}, nil, err
	}
	e, err := l.o.Starter.Start(sctx, *jit.Runner, jit.Encoded)
	if err != nil {
		// The runner would never come: deregister it, then reconcile again later.
		if _, rerr := l.o.Client.RemoveRunner(sctx, jit.Runner.ID); rerr != nil {
			l.o.Logger.Warn("removing the runner of a failed start failed", "runner", name, "error", rerr)
		}
		return Execution{}, nil, fmt.Errorf("starting runner %s: %w", name, err)
	}
	return e, jit, nil
}

// names are the tracked executions' names, sorted: the same order every time.
func (l *listener) names() []string {
	out := make([]string, 0, len(l.tracked))
	for n := range l.tracked {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// finished handles an execution that ended: its runner, if it never got to run its job
// (an ephemeral runner that did is gone already), is removed.
func (l *listener) finished(ctx context.Context, t *tracked) {
	l.o.Metrics.add("finished")
	l.o.Logger.Info("execution finished", "event", "execution.finished", "execution", t.e.Name, "runner", t.e.Runner, "runner_id", t.e.RunnerID, "took_job", t.busy)
	if !t.removed {
		existed, err := l.o.Client.RemoveRunner(ctx, t.e.RunnerID)
		switch {
		case err != nil:
			l.o.Logger.Warn("removing the runner of an ended execution failed", "runner", t.e.Runner, "runner_id", t.e.RunnerID, "error", err)
		case existed:
			l.o.Metrics.add("runners_removed")
			l.o.Logger.Info("runner removed", "event", "runner.removed", "runner", t.e.Runner, "runner_id", t.e.RunnerID, "reason", "its execution ended without it finishing a job")
		}
	}
	l.release(ctx, t)
}

// neverRegistered stops an execution whose runner took no job within the register
// timeout. The runner is removed first: once it is gone it cannot take a job while its
// execution stops, and a runner that is running a job after all is not removed.
func (l *listener) neverRegistered(ctx context.Context, t *tracked) {
	if !t.removed {
		existed, err := l.o.Client.RemoveRunner(ctx, t.e.RunnerID)
		if errors.Is(err, ErrRunnerBusy) {
			t.busy = true
			l.release(ctx, t)
			return
		}
		if err != nil {
			l.o.Logger.Warn("removing a runner that never registered failed", "runner", t.e.Runner, "runner_id", t.e.RunnerID, "error", err)
			return
		}
		t.removed = true
		if existed {
			l.o.Metrics.add("runners_removed")
			l.o.Logger.Info("runner removed", "event", "runner.removed", "runner", t.e.Runner, "runner_id", t.e.RunnerID, "reason", "it took no job within the register timeout")
		}
	}
	if t.stopped {
		return
	}
	if err := l.o.Starter.Stop(ctx, t.e); err != nil {
		l.o.Metrics.add("failures")
		l.o.Logger.Warn("stopping an execution whose runner never registered failed", "execution", t.e.Name, "error", err)
		return // stopped again at the next reconcile
	}
	t.stopped = true
	l.o.Metrics.add("stopped")
	l.o.Logger.Warn("execution stopped: its runner took no job", "event", "execution.stopped", "execution", t.e.Name, "runner", t.e.Runner,
		"runner_id", t.e.RunnerID, "register_timeout", l.o.RegisterTimeout.String())
	l.release(ctx, t)
}

// release lets the starter delete what it kept of the execution's JIT config.
func (l *listener) release(ctx context.Context, t *tracked) {
	r, ok := l.o.Starter.(Releaser)
	if !ok || t.released {
		return
	}
	if err := r.Release(ctx, t.e); err != nil {
		l.o.Logger.Warn("deleting a runner's JIT config failed", "execution", t.e.Name, "runner", t.e.Runner, "error", err)
		return
	}
	t.released = true
}
