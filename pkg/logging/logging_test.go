package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestJSONCarriesCorrelationAndRedacts(t *testing.T) {
	var buf bytes.Buffer
	red := NewRedactor()
	l, err := New(&buf, Options{Format: "json", CorrelationID: "run-1", RunnerName: "r1", Redactor: red})
	if err != nil {
		t.Fatal(err)
	}
	red.Add("s3cr3t-token")
	red.Add("ab") // too short to mask
	l.With("step", "build").Info("cloning https://x:s3cr3t-token@example.com", "url", "https://x:s3cr3t-token@h", "error", errors.New("auth s3cr3t-token failed"), "ab", "ab")
	line := buf.String()
	if strings.Contains(line, "s3cr3t-token") {
		t.Fatalf("secret leaked: %s", line)
	}
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, line)
	}
	if rec["correlation_id"] != "run-1" || rec["runner"].(map[string]any)["name"] != "r1" || rec["step"] != "build" {
		t.Fatalf("fields missing: %v", rec)
	}
	if rec["error"] != "auth *** failed" || rec["msg"] != "cloning https://x:***@example.com" || rec["ab"] != "ab" {
		t.Fatalf("redaction wrong: %v", rec)
	}
}

func TestGitHubFormat(t *testing.T) {
	var buf bytes.Buffer
	red := NewRedactor()
	l, err := New(&buf, Options{Format: "github", CorrelationID: "c", RunnerName: "r", Redactor: red, Level: slog.LevelInfo})
	if err != nil {
		t.Fatal(err)
	}
	red.Add("tok-12345")
	sl := l.With("step", "sign")
	sl.Info("step started", "event", EventStepStarted)
	sl.Info("signed 50%\nnext", "digest", "sha256:ab")
	sl.Error("step failed", "event", EventStepFailed, "error", "bad tok-12345")
	l.Warn("careful")
	l.Debug("hidden")
	want := "::add-mask::tok-12345\n" +
		"::group::sign\nstep started step=sign event=step.started\n" +
		"signed 50%25%0Anext step=sign digest=sha256:ab\n" +
		"::endgroup::\n::error title=relay sign::step failed step=sign event=step.failed error=bad ***\n" +
		"::warning::careful\n"
	if got := buf.String(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestNewRejectsUnknownFormat(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, Options{Format: "xml"}); err == nil || !strings.Contains(err.Error(), "json, text, github") {
		t.Fatalf("err = %v", err)
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Fatal("ParseLevel accepted loud")
	}
}

func TestCorrelationID(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"RELAY_CORRELATION_ID": "x", "GITHUB_RUN_ID": "1"}, "x"},
		{map[string]string{"GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_JOB": "release"}, "42-2-release"},
		{map[string]string{"GITHUB_RUN_ID": "42", "GITHUB_JOB": "release"}, "42-1-release"},
	}
	for _, tt := range tests {
		if got := CorrelationID(env(tt.env)); got != tt.want {
			t.Errorf("CorrelationID(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
	a, b := CorrelationID(env(nil)), CorrelationID(env(nil))
	if a == b || !strings.HasPrefix(a, "relay-") {
		t.Errorf("generated ids %q %q", a, b)
	}
	if RunnerName(env(map[string]string{"RUNNER_NAME": "gh-7"})) != "gh-7" {
		t.Error("RUNNER_NAME not used")
	}
}

func TestRedactorForms(t *testing.T) {
	r := NewRedactor()
	r.Add("p@ss/w:rd+1")
	r.Add("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIGLlamZqzBZ1b0GbE+kA5pC3Vd\nAwEHoUQDQgAE2x9bq6i\n-----END EC PRIVATE KEY-----\n")
	tests := []struct{ in, want string }{
		// Registered values, also URL-encoded and line by line.
		{"clone https://bob:p%40ss%2Fw:rd%2B1@git.example.com/x.git", "clone https://bob:***@git.example.com/x.git"},
		{"pw p@ss/w:rd+1 again", "pw *** again"},
		{"key line MHcCAQEEIIGLlamZqzBZ1b0GbE+kA5pC3Vd echoed", "key line *** echoed"},
		// Shapes, registered or not.
		{`{"message":"bad token","token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvIn0.c2lnbmF0dXJlLXBhcnQ"}`, `{"message":"bad token","token":"***"}`},
		{"Authorization: Bearer abcdefgh12345678 was refused", "Authorization: Bearer *** was refused"},
		{"sent token ghs_16C7e42F292c6912E7710c838347Ae178B4a", "sent token ***"},
		{"https://x-access-token:s3cr3tvalue@github.com/acme/app.git", "https://x-access-token:***@github.com/acme/app.git"},
		{"target user:hunter22@registry.example.com/acme/app is not valid", "target user:***@registry.example.com/acme/app is not valid"},
		{`VAULT said {"client_secret": "Zm9vYmFy-baz"}`, `VAULT said {"client_secret": "***"}`},
		{"X-Amz: secret_access_key=wJalrXUtnFEMI/K7MDENG", "X-Amz: secret_access_key=***"},
		// Prose and references stay readable.
		{"add `permissions: id-token: write` to the job", "add `permissions: id-token: write` to the job"},
		{"ghcr.io/acme/app:v1@sha256:0123456789abcdef", "ghcr.io/acme/app:v1@sha256:0123456789abcdef"},
		{"release github.com/acme/app v1.2.3 by bob", "release github.com/acme/app v1.2.3 by bob"},
		{"password: required", "password: required"},
		{"skip workflow grants id-token: write: not running inside a job", "skip workflow grants id-token: write: not running inside a job"},
		{"id_token: s3cr3t: leaked", "id_token: *** leaked"},
		{"the registry wants basic authentication", "the registry wants basic authentication"},
	}
	for _, tt := range tests {
		if got := r.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q)\n = %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

// TestGitHubMasksMultiLineSecretsByLine: ::add-mask:: ends at a newline, so a PEM key is
// masked one line at a time; nothing of it is ever printed outside a mask command.
func TestGitHubMasksMultiLineSecretsByLine(t *testing.T) {
	var buf bytes.Buffer
	red := NewRedactor()
	red.Add("known-before-the-logger")
	if _, err := New(&buf, Options{Format: "github", Redactor: red}); err != nil {
		t.Fatal(err)
	}
	red.Add("-----BEGIN KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldY\nWVphYmNkZWZnaGlqa2xtbm9w\n-----END KEY-----\n")
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if !strings.HasPrefix(l, "::add-mask::") || strings.Count(l, "::add-mask::") != 1 {
			t.Errorf("a line outside a mask command: %q", l)
		}
	}
	for _, want := range []string{"::add-mask::known-before-the-logger\n", "::add-mask::QUJDREVGR0hJSktMTU5PUFFSU1RVVldY\n", "::add-mask::WVphYmNkZWZnaGlqa2xtbm9w\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("no %q in:\n%s", want, buf.String())
		}
	}
}
