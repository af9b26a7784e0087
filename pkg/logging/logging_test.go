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
