package runner

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/github"
)

// TestMain lets this test binary play the Actions runner (testutil.FakeRunnerDir).
func TestMain(m *testing.M) {
	testutil.MaybeFakeRunner()
	os.Exit(m.Run())
}

// logBuffer collects JSON log records.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) events(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, rec)
	}
	return out
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// appTokens is the CLI's credential path in small: installation tokens from the fake's App.
func appTokens(gh *testutil.GitHubRunners, scope Scope) TokenFunc {
	return func(ctx context.Context) (string, error) {
		tok, err := github.InstallationToken(ctx, github.AppOptions{AppID: gh.AppID, PrivateKey: gh.AppKey, Repository: scope.Repo, Org: scope.Org, BaseURL: gh.URL})
		if err != nil {
			return "", err
		}
		return tok.Value, nil
	}
}

func baseOptions(t *testing.T, gh *testutil.GitHubRunners, scenario string, logs *logBuffer) Options {
	scope := Scope{Repo: "acme/shop"}
	return Options{
		Scope: scope, APIURL: gh.URL, WebURL: gh.URL, Token: appTokens(gh, scope), RunnerDir: testutil.FakeRunnerDir(t, scenario),
		Labels: []string{"self-hosted", "linux", "relay"}, IdleTimeout: time.Minute, StopGrace: 10 * time.Second,
		Environ: func() []string { return os.Environ() },
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("correlation_id", "cid-runner-test"),
		Rand:    func() string { return "c0ffee01" },
	}
}

func eventNames(recs []map[string]any) []string {
	var out []string
	for _, r := range recs {
		if e, _ := r["event"].(string); e != "" && e != "runner.output" {
			out = append(out, e)
		}
	}
	return out
}

func TestRunScenarios(t *testing.T) {
	for _, tc := range []struct {
		scenario string
		setup    func(o *Options, gh *testutil.GitHubRunners)
		signal   bool // SIGTERM relay once the job started
		code     int
		outcome  string
		events   []string
	}{
		{scenario: "success", code: ExitOK, outcome: "job-succeeded",
			events: []string{"runner.registered", "runner.version", "runner.started", "runner.connected", "runner.listening", "job.started", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "fail", code: ExitJobFailed, outcome: "job-failed",
			events: []string{"runner.registered", "runner.version", "runner.started", "runner.connected", "runner.listening", "job.started", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "idle", setup: func(o *Options, _ *testutil.GitHubRunners) { o.IdleTimeout = 200 * time.Millisecond }, code: ExitOK, outcome: "no-job",
			events: []string{"runner.registered", "runner.version", "runner.started", "runner.connected", "runner.listening", "runner.idle", "runner.removed", "runner.exited"}},
		{scenario: "deprecated", code: ExitConfig, outcome: "runner-version-refused",
			events: []string{"runner.registered", "runner.version", "runner.started", "runner.connected", "runner.listening", "runner.version_refused", "runner.removed", "runner.exited"}},
		{scenario: "crash", code: ExitRunner, outcome: "runner-failed",
			events: []string{"runner.registered", "runner.version", "runner.started", "runner.connected", "runner.listening", "runner.removed", "runner.exited"}},
		{scenario: "job-forever", signal: true, code: ExitTerminated, outcome: "terminated",
			events: []string{"runner.registered", "runner.version", "runner.started", "runner.connected", "runner.listening", "job.started", "runner.signal", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "job-forever", setup: func(o *Options, _ *testutil.GitHubRunners) { o.JobTimeout = 200 * time.Millisecond }, code: ExitJobTimeout, outcome: "job-timeout",
			events: []string{"runner.registered", "runner.version", "runner.started", "runner.connected", "runner.listening", "job.started", "job.timeout", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "success", setup: func(_ *Options, gh *testutil.GitHubRunners) { gh.NoJIT = true }, code: ExitOK, outcome: "job-succeeded",
			events: []string{"runner.registered", "runner.version", "runner.started", "runner.connected", "runner.listening", "job.started", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "idle", setup: func(o *Options, gh *testutil.GitHubRunners) {
			o.Token, o.RegistrationToken, o.IdleTimeout = nil, gh.IssueRegistrationToken(), 200*time.Millisecond
		}, code: ExitOK, outcome: "no-job",
			events: []string{"runner.registered", "runner.version", "runner.started", "runner.connected", "runner.listening", "runner.idle", "runner.removed", "runner.exited"}},
	} {
		name := tc.scenario
		if tc.setup != nil {
			name += fmt.Sprintf("/variant-%d", len(tc.events)+tc.code)
		}
		t.Run(name, func(t *testing.T) {
			gh := testutil.StartGitHubRunners(t, "acme/shop")
			logs := &logBuffer{}
			o := baseOptions(t, gh, tc.scenario, logs)
			if tc.setup != nil {
				tc.setup(&o, gh)
			}
			if tc.signal {
				// SIGTERM to ourselves once the job runs: what the platform sends to PID 1.
				o.Logger = slog.New(&onEvent{Handler: o.Logger.Handler(), event: "job.started", do: func() { syscall.Kill(os.Getpid(), syscall.SIGTERM) }})
				// Keep the test binary alive: the runner's own Notify has the signal too.
				keep := make(chan os.Signal, 1)
				signal.Notify(keep, syscall.SIGTERM)
				defer signal.Stop(keep)
			}
			res, err := Run(context.Background(), o)
			if res.ExitCode != tc.code || res.Outcome != tc.outcome {
				t.Fatalf("exit %d (%s), want %d (%s): %v\n%s", res.ExitCode, res.Outcome, tc.code, tc.outcome, err, logs)
			}
			if got := eventNames(logs.events(t)); strings.Join(got, ",") != strings.Join(tc.events, ",") {
				t.Errorf("events\n got %v\nwant %v", got, tc.events)
			}
			if rs := gh.Runners(); len(rs) != 0 {
				t.Errorf("registrations left behind: %+v", rs)
			}
			registered := false
			for _, rec := range logs.events(t) {
				name, _ := rec["runner_name"].(string)
				if !strings.HasPrefix(name, "relay-") || rec["correlation_id"] != "cid-runner-test" {
					t.Fatalf("record without runner name or correlation id: %v", rec)
				}
				registered = registered || rec["event"] == "runner.registered"
				if registered && o.Token != nil && rec["runner_id"] == nil {
					t.Fatalf("record after registration without the runner id: %v", rec)
				}
			}
		})
	}
}

// onEvent runs do when a record with the event is logged.
type onEvent struct {
	slog.Handler
	event string
	do    func()
	once  sync.Once
}

func (h *onEvent) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "event" && a.Value.String() == h.event {
			h.once.Do(h.do)
		}
		return true
	})
	return err
}

func (h *onEvent) WithAttrs(as []slog.Attr) slog.Handler {
	return &onEvent{Handler: h.Handler.WithAttrs(as), event: h.event, do: h.do}
}

// A replica killed before it could clean up leaves an offline registration; the next one
// removes offline registrations of its prefix registered longer ago than OrphanAge, and
// nothing else: not a runner that registered a moment ago (still connecting), not an online
// or busy one, not another prefix's.
func TestOrphanSweep(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	old := runnerName("relay", now.Add(-time.Hour), "deadbeef")
	orphan := gh.AddRunner(old, "offline")
	fresh := gh.AddRunner(runnerName("relay", now.Add(-10*time.Second), "cafe0001"), "offline")
	busy := gh.AddRunner(runnerName("relay", now.Add(-2*time.Hour), "cafe0002"), "online")
	gh.SetStatus(busy, "online", true)
	other := gh.AddRunner(runnerName("build", now.Add(-2*time.Hour), "cafe0003"), "offline")
	logs := &logBuffer{}
	o := baseOptions(t, gh, "success", logs)
	o.OrphanAge, o.Now = 15*time.Minute, func() time.Time { return now }
	if res, err := Run(context.Background(), o); err != nil || res.ExitCode != ExitOK {
		t.Fatalf("run: %v %+v\n%s", err, res, logs)
	}
	left := map[int64]bool{}
	for _, r := range gh.Runners() {
		left[r.ID] = true
	}
	if left[orphan] || !left[fresh] || !left[busy] || !left[other] || len(left) != 3 {
		t.Fatalf("after the sweep: %+v", gh.Runners())
	}
	if !strings.Contains(logs.String(), `"event":"runner.orphan_removed"`) || !strings.Contains(logs.String(), old) {
		t.Fatalf("orphan removal not logged:\n%s", logs)
	}
}

func TestNameTime(t *testing.T) {
	at := time.Date(2026, 11, 22, 8, 30, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{runnerName("relay", at, "0a1b2c3d"), true},
		{"relay-2026112208300-x", false},
		{"relay-notatimestamp-x", false},
		{"other-20261122083005-x", false},
		{"relay-20261122083005", false},
	} {
		got, ok := nameTime("relay", tc.name)
		if ok != tc.ok || (ok && !got.Equal(at)) {
			t.Errorf("nameTime(%q) = %v, %v", tc.name, got, ok)
		}
	}
}

// TestRunHandedJIT: a runner handed its JIT config (relay listener's executions) needs no
// scope and no credential, takes its name and id from the config, passes the config only as
// run.sh's argument, and leaves the registration to the listener; a config that is not one,
// or one with App credentials beside it, is refused before anything starts.
func TestRunHandedJIT(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	logs := &logBuffer{}
	o := baseOptions(t, gh, "success", logs)
	jit := testutil.EncodeJITConfig(4711, "relay-shop-7", "relay-shop", "https://broker.example/tenant/", "private-key-1")
	o.Scope, o.Token, o.JITConfig, o.SkipVersionCheck = Scope{}, nil, jit+"\n", true
	res, err := Run(context.Background(), o)
	if err != nil || res.ExitCode != ExitOK || res.Name != "relay-shop-7" || res.RunnerID != 4711 {
		t.Fatalf("%+v %v\n%s", res, err, logs)
	}
	args, _ := os.ReadFile(filepath.Join(o.RunnerDir, "run.args"))
	if string(args) != "--jitconfig\n"+jit {
		t.Fatalf("run.sh args: %q", args)
	}
	env, _ := os.ReadFile(filepath.Join(o.RunnerDir, "run.env"))
	if strings.Contains(string(env), jit) {
		t.Fatal("the JIT config reached the runner's environment")
	}
	if got := strings.Join(eventNames(logs.events(t)), ","); !strings.HasPrefix(got, "runner.registered,") || !strings.Contains(got, "runner.handed_back") || strings.Contains(got, "runner.removed") {
		t.Fatalf("events %s", got)
	}
	if calls := gh.Calls(); len(calls) != 0 {
		t.Fatalf("a handed-in runner called GitHub's API: %v", calls)
	}
	for _, rec := range logs.events(t) {
		if rec["runner_name"] != "relay-shop-7" {
			t.Fatalf("record without the config's runner name: %v", rec)
		}
	}

	// Settings relay cannot read (another encoding) still run, named as the listener named it.
	odd := base64.StdEncoding.EncodeToString([]byte(`{".runner":"` + base64.StdEncoding.EncodeToString([]byte("\xef\xbb\xbf<xml/>")) + `"}`))
	o3 := baseOptions(t, gh, "success", &logBuffer{})
	o3.Scope, o3.Token, o3.JITConfig, o3.SkipVersionCheck = Scope{}, nil, odd, true
	o3.Getenv = func(k string) string { return map[string]string{"RELAY_RUNNER_NAME": "relay-shop-8"}[k] }
	if res, err := Run(context.Background(), o3); err != nil || res.ExitCode != ExitOK || res.Name != "relay-shop-8" {
		t.Fatalf("unreadable settings: %+v %v", res, err)
	}

	for _, bad := range []func(*Options){
		func(o *Options) { o.JITConfig = "not-base64!" },
		func(o *Options) { o.JITConfig = "eyJhIjoiYiJ9" }, // {"a":"b"}: no .runner
		func(o *Options) { o.Token = appTokens(gh, Scope{Repo: "acme/shop"}) },
		func(o *Options) { o.RegistrationToken = "reg" },
	} {
		o2 := o
		bad(&o2)
		res, err := Run(context.Background(), o2)
		if res.ExitCode != ExitConfig || err == nil {
			t.Errorf("accepted: %+v %v", res, err)
		}
	}
}
