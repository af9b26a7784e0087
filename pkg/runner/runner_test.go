package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/ghapp"
)

// TestMain lets this test binary play the Actions runner: run.sh and config.sh in a test's
// runner directory exec it with "__fake_runner__".
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "__fake_runner__" {
		os.Exit(fakeRunner(os.Args[2], os.Args[3:]))
	}
	os.Exit(m.Run())
}

// fakeRunner prints the real runner's lines for the scenario in ./scenario and exits with
// its codes; it records its environment and arguments for the tests to inspect.
func fakeRunner(mode string, args []string) int {
	raw, _ := os.ReadFile("scenario")
	scenario := strings.TrimSpace(string(raw))
	var env []string
	env = append(env, os.Environ()...)
	os.WriteFile(mode+".env", []byte(strings.Join(env, "\n")), 0o644)
	os.WriteFile(mode+".args", []byte(strings.Join(args, "\n")), 0o644)
	flag := func(name string) string {
		for i, a := range args {
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
		}
		return ""
	}
	post := func(path string, body any) error {
		u := flag("--url")
		if u == "" { // config.sh remove: the registration's own settings know the server
			b, _ := os.ReadFile(".url")
			u = string(b)
		}
		os.WriteFile(".url", []byte(u), 0o644)
		if i := strings.Index(u[len("http://"):], "/"); i >= 0 {
			u = u[:len("http://")+i]
		}
		b, _ := json.Marshal(body)
		resp, err := http.Post(u+path, "application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s: %d", path, resp.StatusCode)
		}
		return nil
	}
	switch mode {
	case "config":
		if len(args) > 0 && args[0] == "remove" {
			if err := post("/_fake/remove", map[string]any{"token": flag("--token")}); err != nil {
				fmt.Println("Failed: removing runner from the server", err)
				return 1
			}
			fmt.Println("# Runner removal\n\n√ Runner removed successfully")
			return 0
		}
		if err := post("/_fake/register", map[string]any{"token": flag("--token"), "name": flag("--name"), "labels": strings.Split(flag("--labels"), ",")}); err != nil {
			fmt.Println("Http response code: NotFound", err)
			return 1
		}
		fmt.Println("\n√ Connected to GitHub\n\n# Runner Registration\n\n√ Runner successfully added\n√ Runner connection is good\n\n# Runner settings\n\n√ Settings Saved.")
		return 0
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	os.WriteFile("pid", []byte(fmt.Sprint(os.Getpid())), 0o644)
	ts := func() string { return time.Now().UTC().Format("2006-01-02 15:04:05Z") }
	fmt.Printf("\n√ Connected to GitHub\n\nCurrent runner version: '2.321.0'\n%s: Listening for Jobs\n", ts())
	switch scenario {
	case "success", "fail":
		result := map[string]string{"success": "Succeeded", "fail": "Failed"}[scenario]
		fmt.Printf("%s: Running job: build\n", ts())
		fmt.Printf("%s: Job build completed with result: %s\n", ts(), result)
		return 0
	case "crash":
		fmt.Fprintln(os.Stderr, "Unhandled exception. System.IO.IOException: No space left on device")
		return 134
	case "idle":
		<-term
		fmt.Println("Exiting...\nRunner listener exit with 0 return code, stop the service, no retry needed.")
		return 0
	case "job-forever":
		fmt.Printf("%s: Running job: deploy\n", ts())
		<-term
		fmt.Printf("%s: Job deploy completed with result: Canceled\n", ts())
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown scenario", scenario)
	return 2
}

// runnerDir writes run.sh and config.sh that exec this test binary, and the scenario.
func runnerDir(t *testing.T, scenario string) string {
	t.Helper()
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]string{"run.sh": "run", "config.sh": "config"} {
		script := fmt.Sprintf("#!/bin/sh\nexec %q __fake_runner__ %s \"$@\"\n", exe, mode)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "scenario"), []byte(scenario), 0o644)
	return dir
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
		tok, err := ghapp.InstallationToken(ctx, ghapp.Options{AppID: gh.AppID, PrivateKey: gh.AppKey, Repository: scope.Repo, Org: scope.Org, BaseURL: gh.URL})
		if err != nil {
			return "", err
		}
		return tok.Value, nil
	}
}

func baseOptions(t *testing.T, gh *testutil.GitHubRunners, scenario string, logs *logBuffer) Options {
	scope := Scope{Repo: "acme/shop"}
	return Options{
		Scope: scope, APIURL: gh.URL, WebURL: gh.URL, Token: appTokens(gh, scope), RunnerDir: runnerDir(t, scenario),
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
			events: []string{"runner.registered", "runner.started", "runner.connected", "runner.listening", "job.started", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "fail", code: ExitJobFailed, outcome: "job-failed",
			events: []string{"runner.registered", "runner.started", "runner.connected", "runner.listening", "job.started", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "idle", setup: func(o *Options, _ *testutil.GitHubRunners) { o.IdleTimeout = 200 * time.Millisecond }, code: ExitOK, outcome: "no-job",
			events: []string{"runner.registered", "runner.started", "runner.connected", "runner.listening", "runner.idle", "runner.removed", "runner.exited"}},
		{scenario: "crash", code: ExitRunner, outcome: "runner-failed",
			events: []string{"runner.registered", "runner.started", "runner.connected", "runner.listening", "runner.removed", "runner.exited"}},
		{scenario: "job-forever", signal: true, code: ExitTerminated, outcome: "terminated",
			events: []string{"runner.registered", "runner.started", "runner.connected", "runner.listening", "job.started", "runner.signal", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "job-forever", setup: func(o *Options, _ *testutil.GitHubRunners) { o.JobTimeout = 200 * time.Millisecond }, code: ExitJobTimeout, outcome: "job-timeout",
			events: []string{"runner.registered", "runner.started", "runner.connected", "runner.listening", "job.started", "job.timeout", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "success", setup: func(_ *Options, gh *testutil.GitHubRunners) { gh.NoJIT = true }, code: ExitOK, outcome: "job-succeeded",
			events: []string{"runner.registered", "runner.started", "runner.connected", "runner.listening", "job.started", "job.completed", "runner.removed", "runner.exited"}},
		{scenario: "idle", setup: func(o *Options, gh *testutil.GitHubRunners) {
			o.Token, o.RegistrationToken, o.IdleTimeout = nil, gh.IssueRegistrationToken(), 200*time.Millisecond
		}, code: ExitOK, outcome: "no-job",
			events: []string{"runner.registered", "runner.started", "runner.connected", "runner.listening", "runner.idle", "runner.removed", "runner.exited"}},
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
			for _, rec := range logs.events(t) {
				if rec["runner_name"] != "relay-"+rec["runner_name"].(string)[len("relay-"):] || rec["correlation_id"] != "cid-runner-test" {
					t.Fatalf("record without runner name or correlation id: %v", rec)
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
