package scaleset

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

// clock is a test's time: it moves only when the test says.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTestClient(t *testing.T, b *testutil.Broker, clk *clock) (*Client, *int) {
	t.Helper()
	minted := 0
	c, err := New(Options{ConfigURL: "https://github.com/acme", APIURL: b.APIURL(), Now: clk.now, HTTP: b.Client(),
		RegistrationToken: func(context.Context) (string, error) { minted++; return b.RegistrationToken, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return c, &minted
}

// TestScaleSetProtocol: the listener's whole conversation with the service, against the
// fake broker: connect, find or create the scale set, one session (a second is refused),
// jobs available → acquired → assigned, acknowledged, distinct single-use JIT configs,
// runners removed, the session closed so the next one opens.
func TestScaleSetProtocol(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	b := testutil.StartBroker(t)
	b.Now = clk.now
	c, _ := newTestClient(t, b, clk)

	g, err := c.RunnerGroup(ctx, "default")
	if err != nil || g.ID != 1 {
		t.Fatalf("runner group: %+v %v", g, err)
	}
	if _, err := c.RunnerGroup(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown group: %v", err)
	}
	if _, err := c.ScaleSet(ctx, g.ID, "relay"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent scale set: %v", err)
	}
	made, err := c.CreateScaleSet(ctx, ScaleSet{Name: "relay", RunnerGroupID: g.ID, Labels: []Label{{Name: "linux"}}})
	if err != nil || made.ID == 0 {
		t.Fatalf("create: %+v %v", made, err)
	}
	got, err := c.ScaleSet(ctx, g.ID, "relay")
	if err != nil || got.ID != made.ID {
		t.Fatalf("get: %+v %v", got, err)
	}

	s, err := c.OpenSession(ctx, made.ID, "listener-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenSession(ctx, made.ID, "listener-2"); !errors.Is(err, ErrSessionConflict) || !strings.Contains(err.Error(), "already has an active session") {
		t.Fatalf("second session: %v", err)
	}

	b.QueueJobs(made.ID, 3)
	m, err := s.Message(ctx, 0, 10)
	if err != nil || m == nil || len(m.Available) != 3 || m.Statistics.TotalAvailableJobs != 3 {
		t.Fatalf("first message: %+v %v", m, err)
	}
	var ids []int64
	for _, j := range m.Available {
		ids = append(ids, j.RunnerRequestID)
	}
	acquired, err := s.Acquire(ctx, ids)
	if err != nil || len(acquired) != 3 {
		t.Fatalf("acquire: %v %v", acquired, err)
	}
	if err := s.Ack(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	m2, err := s.Message(ctx, m.ID, 10)
	if err != nil || m2 == nil || len(m2.Assigned) != 3 || m2.ID <= m.ID || m2.Statistics.TotalAssignedJobs != 3 {
		t.Fatalf("assigned: %+v %v", m2, err)
	}
	if err := s.Ack(ctx, m2.ID); err != nil {
		t.Fatal(err)
	}
	// Nothing more: the poll ends empty.
	if m3, err := s.Message(ctx, m2.ID, 7); err != nil || m3 != nil {
		t.Fatalf("empty poll: %+v %v", m3, err)
	}
	if caps := b.Capacities(); len(caps) != 3 || caps[2] != 7 {
		t.Fatalf("max capacity sent: %v", caps)
	}

	seen := map[string]bool{}
	var runners []int64
	for i := 0; i < 3; i++ {
		j, err := c.JITConfig(ctx, made.ID, "relay-runner-"+string(rune('a'+i)))
		if err != nil || seen[j.Encoded] || b.Runner(j.Encoded) != j.Runner.ID {
			t.Fatalf("jit config %d: %+v %v", i, j, err)
		}
		seen[j.Encoded] = true
		runners = append(runners, j.Runner.ID)
	}
	// A runner in the middle of a job is not removed; the others are, once.
	b.QueueJobs(made.ID, 1)
	if m, err := s.Message(ctx, 0, 3); err != nil || len(m.Available) != 1 {
		t.Fatalf("message: %+v %v", m, err)
	} else if _, err := s.Acquire(ctx, []int64{m.Available[0].RunnerRequestID}); err != nil {
		t.Fatal(err)
	}
	for jit := range seen {
		if b.Runner(jit) == runners[2] {
			if err := b.TakeJob(jit); err != nil {
				t.Fatal(err)
			}
			if err := b.TakeJob(jit); err == nil {
				t.Fatal("the fake broker took a JIT config twice")
			}
		}
	}
	if existed, err := c.RemoveRunner(ctx, runners[2]); !errors.Is(err, ErrRunnerBusy) || !existed {
		t.Fatalf("removing a busy runner: %v", err)
	}
	for _, id := range runners[:2] {
		if existed, err := c.RemoveRunner(ctx, id); err != nil || !existed {
			t.Fatal(existed, err)
		}
	}
	if existed, err := c.RemoveRunner(ctx, runners[0]); err != nil || existed || b.Registered() != 1 {
		t.Fatalf("removing twice: %v %v, %d registered", existed, err, b.Registered())
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s2, err := c.OpenSession(ctx, made.ID, "listener-2"); err != nil || s2.ID() == s.ID() {
		t.Fatalf("session after close: %v", err)
	}
	// One connect for all of it: the admin token was still good.
	if b.Connects() != 1 {
		t.Fatalf("%d connects", b.Connects())
	}
}

// TestTokensRenewed: an expired queue token is renewed (PATCH) and the call made again;
// the admin token is renewed a minute before it expires, with a new registration token.
func TestTokensRenewed(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	b := testutil.StartBroker(t)
	b.Now, b.AdminTTL = clk.now, 10*time.Minute
	c, minted := newTestClient(t, b, clk)
	ss, err := c.CreateScaleSet(ctx, ScaleSet{Name: "relay", RunnerGroupID: 1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenSession(ctx, ss.ID, "l")
	if err != nil {
		t.Fatal(err)
	}
	b.QueueJobs(ss.ID, 1)
	b.ExpireQueueTokens()
	m, err := s.Message(ctx, 0, 1)
	if err != nil || m == nil || len(m.Available) != 1 {
		t.Fatalf("after expiry: %+v %v", m, err)
	}
	patched := 0
	for _, r := range b.Requests() {
		if strings.HasPrefix(r, "PATCH ") && strings.Contains(r, "/sessions/") {
			patched++
		}
	}
	if patched != 1 {
		t.Fatalf("%d session refreshes:\n%s", patched, strings.Join(b.Requests(), "\n"))
	}
	clk.add(9*time.Minute + 30*time.Second) // within a minute of the admin token's expiry
	if _, err := c.ScaleSet(ctx, 1, "relay"); err != nil {
		t.Fatal(err)
	}
	if b.Connects() != 2 || *minted != 2 {
		t.Fatalf("connects %d, registration tokens %d", b.Connects(), *minted)
	}
}

// TestServiceErrors: a deleted scale set is ErrNotFound; a refused registration names the
// step; no error carries a token.
func TestServiceErrors(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Now()}
	b := testutil.StartBroker(t)
	c, _ := newTestClient(t, b, clk)
	ss, _ := c.CreateScaleSet(ctx, ScaleSet{Name: "relay", RunnerGroupID: 1})
	b.DeleteScaleSet(ss.ID)
	_, err := c.OpenSession(ctx, ss.ID, "l")
	var se *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &se) || se.Status != 404 || se.Temporary() {
		t.Fatalf("deleted scale set: %v", err)
	}
	bad, _ := New(Options{ConfigURL: "https://github.com/acme", APIURL: b.APIURL(), HTTP: b.Client(),
		RegistrationToken: func(context.Context) (string, error) { return "wrong-reg-token", nil }})
	_, err = bad.ScaleSet(ctx, 1, "relay")
	if err == nil || !strings.Contains(err.Error(), "/actions/runner-registration: 401") || strings.Contains(err.Error(), "wrong-reg-token") {
		t.Fatalf("refused registration: %v", err)
	}
	if _, err := New(Options{ConfigURL: "github.com/acme", RegistrationToken: func(context.Context) (string, error) { return "", nil }}); err == nil {
		t.Fatal("a config URL without a scheme was accepted")
	}
}
