package scaleset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"time"

	"github.com/relaydev/relay/internal/backoff"
)

// Starter starts the runner containers: one execution per runner, each handed its own
// single-use JIT config (Azure Container Apps jobs, Kubernetes Jobs).
type Starter interface {
	// Start starts an execution that runs the runner the JIT config registers.
	Start(ctx context.Context, runner string, jitConfig string) (Execution, error)
	// Running lists the executions this listener's starter started that have not ended:
	// the platform's truth, so a restarted listener starts none twice.
	Running(ctx context.Context) ([]Execution, error)
}

// Execution is one started runner container.
type Execution struct {
	Name   string // the platform's name of the execution
	Runner string // the runner it registers
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
	l := &listener{o: o, rand: rand.New(rand.NewSource(o.Now().UnixNano()))}
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
}

// pause waits after a failure, or gives up: a scale set that is gone, or a service that
// kept failing past the budget.
func (l *listener) pause(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("scale set %d: %w (it was deleted: recreate it)", l.o.ScaleSetID, err)
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
		case errors.Is(err, ErrNotFound):
			return err
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

// step polls once and acts on what came: acquire what is available, start what is
// assigned (from the statistics), acknowledge.
func (l *listener) step(ctx context.Context, s *Session, st *serving) error {
	if st.fresh {
		n, err := l.reconcile(ctx, st.stats)
		if err != nil {
			return err
		}
		st.running, st.fresh = n, false
	}
	m, err := s.Message(ctx, st.last, max(l.o.MaxRunners-st.running, 0))
	if err != nil || m == nil {
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

// reconcile starts executions until those running cover the assigned jobs, within the
// cap; it returns how many run.
func (l *listener) reconcile(ctx context.Context, st *Statistics) (int, error) {
	running, err := l.o.Starter.Running(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing running executions: %w", err)
	}
	n := len(running)
	if st == nil {
		return n, nil
	}
	want := min(st.TotalAssignedJobs, l.o.MaxRunners)
	for ; n < want; n++ {
		name := l.o.RunnerName()
		jit, err := l.o.Client.JITConfig(ctx, l.o.ScaleSetID, name)
		if err != nil {
			return n, err
		}
		e, err := l.o.Starter.Start(ctx, name, jit.Encoded)
		if err != nil {
			// The runner would never come: deregister it, then reconcile again later.
			if rerr := l.o.Client.RemoveRunner(context.WithoutCancel(ctx), jit.Runner.ID); rerr != nil {
				l.o.Logger.Warn("removing the runner of a failed start failed", "runner", name, "error", rerr)
			}
			return n, fmt.Errorf("starting runner %s: %w", name, err)
		}
		l.o.Logger.Info("execution started", "event", "execution.started", "execution", e.Name, "runner", name, "runner_id", jit.Runner.ID)
	}
	if st.TotalAssignedJobs > l.o.MaxRunners {
		l.o.Logger.Warn("more jobs assigned than max runners: the rest wait", "event", "listener.capped", "assigned", st.TotalAssignedJobs, "max_runners", l.o.MaxRunners)
	}
	return n, nil
}
