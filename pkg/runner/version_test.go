package runner

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

func TestParseAndPinnedVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"2.337.0", "2.337.0", true},
		{"v2.337.1", "2.337.1", true},
		{" 2.10.3\n", "2.10.3", true},
		{"2.337", "", false},
		{"latest", "", false},
		{"2.337.0-beta", "", false},
	} {
		v, err := ParseVersion(tc.in)
		if (err == nil) != tc.ok || (tc.ok && v.String() != tc.want) {
			t.Errorf("ParseVersion(%q) = %v, %v", tc.in, v, err)
		}
		if err != nil && !strings.Contains(err.Error(), "MAJOR.MINOR.PATCH") {
			t.Errorf("error does not say the form: %v", err)
		}
	}
	if !(Version{2, 9, 9}).Less(Version{2, 10, 0}) || (Version{2, 10, 0}).Less(Version{2, 9, 9}) || (Version{2, 1, 1}).Less(Version{2, 1, 1}) {
		t.Error("Less does not order numerically")
	}
	for _, tc := range []struct {
		ref  string
		want string
	}{
		{"ghcr.io/actions/actions-runner:2.337.0@sha256:e5496277be5d09bc968b3d64911b74e219ac4a3f2edce956a3ecf9271bea1ef4", "2.337.0"},
		{"registry.internal:5000/mirror/actions-runner:2.336.1", "2.336.1"},
		{"ghcr.io/actions/actions-runner:latest", ""},
		{"ghcr.io/actions/actions-runner@sha256:e5496277be5d09bc968b3d64911b74e219ac4a3f2edce956a3ecf9271bea1ef4", ""},
		{"registry.internal:5000/mirror/actions-runner", ""},
		{"gcr.io/distroless/static-debian12:2.337.0", ""},
	} {
		v, ok := PinnedVersion(tc.ref)
		if got := map[bool]string{true: v.String()}[ok]; got != tc.want {
			t.Errorf("PinnedVersion(%q) = %q, want %q", tc.ref, got, tc.want)
		}
	}
}

func TestInstalledVersion(t *testing.T) {
	ctx := context.Background()
	if v, err := InstalledVersion(ctx, testutil.FakeRunnerDir(t, "idle")); err != nil || v.String() != testutil.FakeRunnerVersion {
		t.Fatalf("from the deps manifest: %v %v", v, err)
	}
	// No manifest: the listener is asked.
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "Runner.Listener"), []byte("#!/bin/sh\n[ \"$1\" = --version ] && echo 2.330.1\n"), 0o755)
	if v, err := InstalledVersion(ctx, dir); err != nil || v.String() != "2.330.1" {
		t.Fatalf("from --version: %v %v", v, err)
	}
	_, err := InstalledVersion(ctx, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "--runner-dir") {
		t.Fatalf("an empty directory: %v", err)
	}
}

func TestCheckVersion(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 11, d, 10, 0, 0, 0, time.UTC) }
	releases := []testutil.RunnerRelease{
		{Tag: "v2.340.0", Published: day(30), Prerelease: true}, // never counts
		{Tag: "v2.339.0", Published: day(20)},
		{Tag: "v2.338.1", Published: day(10)},
		{Tag: "v2.338.0", Published: day(1)},
		{Tag: "v2.337.0", Published: time.Date(2026, 10, 1, 10, 0, 0, 0, time.UTC)},
	}
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		version, refusedFrom string
		refused              bool
		summary              string
	}{
		{version: "2.339.0", summary: "runner 2.339.0 is the newest actions/runner release (2026-11-20)"},
		{version: "2.341.0", summary: "not behind the newest actions/runner release 2.339.0"},
		// Superseded on 11-10 by 2.338.1: refused from 12-10.
		{version: "2.338.0", refusedFrom: "2026-12-10", summary: "GitHub refuses it from 2026-12-10, in 7 days"},
		// Superseded on 11-01 by 2.338.0: refused since 12-01, whatever came later.
		{version: "2.337.0", refusedFrom: "2026-12-01", refused: true, summary: "GitHub refuses it since 2026-12-01 (newest 2.339.0, 2026-11-20)"},
		{version: "2.300.0", refusedFrom: "2026-10-31", refused: true},
	} {
		t.Run(tc.version, func(t *testing.T) {
			gh := testutil.StartGitHubRunners(t, "acme/shop")
			gh.Releases = releases
			v, _ := ParseVersion(tc.version)
			f, err := CheckVersion(context.Background(), v, VersionOptions{APIURL: gh.URL, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			if f.Newest.String() != "2.339.0" || f.Refused != tc.refused {
				t.Fatalf("%+v", f)
			}
			if got := map[bool]string{true: f.RefusedFrom.Format("2006-01-02")}[f.Behind()]; got != tc.refusedFrom {
				t.Errorf("refused from %q, want %q", got, tc.refusedFrom)
			}
			if s := f.Summary(now); !strings.Contains(s, tc.summary) {
				t.Errorf("summary %q, want %q in it", s, tc.summary)
			}
			if f.Behind() && !strings.Contains(f.Fix(), "ghcr.io/actions/actions-runner:2.339.0") {
				t.Errorf("fix %q does not name the newest release", f.Fix())
			}
		})
	}
}

func TestCheckVersionErrors(t *testing.T) {
	v := Version{2, 337, 0}
	ghes := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("an anonymous look-up sent %q", r.Header.Get("Authorization"))
		}
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	}))
	defer ghes.Close()
	if _, err := CheckVersion(context.Background(), v, VersionOptions{APIURL: ghes.URL}); !errors.Is(err, ErrNoReleases) {
		t.Errorf("a server without actions/runner: %v", err)
	}
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	gh.Releases = []testutil.RunnerRelease{{Tag: "v2.338.0", Published: time.Now(), Prerelease: true}}
	if _, err := CheckVersion(context.Background(), v, VersionOptions{APIURL: gh.URL}); err == nil || !strings.Contains(err.Error(), "no published release") {
		t.Errorf("only prereleases: %v", err)
	}
	// A token, when there is one, goes with the look-up (an App's rate limit, not the address's).
	bad := func(context.Context) (string, error) { return "ghs_notissued", nil }
	if _, err := CheckVersion(context.Background(), v, VersionOptions{APIURL: gh.URL, Token: bad}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a rejected token: %v", err)
	}
}

// A runner started on a version GitHub already refuses: relay warns with the facts at
// start, asks the listener for its own exit code, and exits 2 (fix the deployment) when
// GitHub turns it away.
func TestRefusedVersionAtStart(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	gh.Releases = []testutil.RunnerRelease{
		{Tag: "v2.330.0", Published: time.Date(2026, 10, 20, 0, 0, 0, 0, time.UTC)},
		{Tag: "v2.322.0", Published: time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)},
		{Tag: "v" + testutil.FakeRunnerVersion, Published: time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)},
	}
	logs := &logBuffer{}
	o := baseOptions(t, gh, "deprecated", logs)
	o.Now = func() time.Time { return time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) }
	res, err := Run(context.Background(), o)
	if res.ExitCode != ExitConfig || res.Outcome != "runner-version-refused" || err == nil || !strings.Contains(err.Error(), "re-pin") {
		t.Fatalf("exit %d (%s): %v", res.ExitCode, res.Outcome, err)
	}
	var version, exited map[string]any
	for _, rec := range logs.events(t) {
		switch rec["event"] {
		case "runner.version":
			version = rec
		case "runner.exited":
			exited = rec
		}
	}
	if version["level"] != "WARN" || version["status"] != "refused" || version["runner_version"] != testutil.FakeRunnerVersion ||
		version["newest"] != "2.330.0" || version["refused_from"] != "2026-10-01T00:00:00Z" ||
		!strings.Contains(version["fix"].(string), "actions-runner:2.330.0") {
		t.Errorf("runner.version: %v", version)
	}
	if exited["child_exit_code"] != float64(exitVersionRefused) {
		t.Errorf("the listener was not asked for its deprecated-version exit code: %v", exited)
	}
	env, _ := os.ReadFile(filepath.Join(o.RunnerDir, "run.env"))
	if !strings.Contains(string(env), "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1") {
		t.Error("run.sh did not get ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1")
	}
	// Skipped look-up (air-gapped): the version is still logged, nothing asked.
	logs2 := &logBuffer{}
	o2 := baseOptions(t, gh, "success", logs2)
	o2.SkipVersionCheck = true
	before := len(gh.Calls())
	if _, err := Run(context.Background(), o2); err != nil {
		t.Fatal(err)
	}
	for _, c := range gh.Calls()[before:] {
		if strings.Contains(c, "actions/runner/releases") {
			t.Errorf("SkipVersionCheck still asked: %s", c)
		}
	}
	if !strings.Contains(logs2.String(), `"event":"runner.version","runner_version":"`+testutil.FakeRunnerVersion+`","status":"unchecked"`) {
		t.Errorf("no unchecked version record:\n%s", logs2)
	}
}

// relay doctor places each runner version, installed or pinned, in the support window:
// ok when current, warn (with the date and the fix) inside the window, fail after it.
func TestDoctorVersionChecks(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	gh.Releases = []testutil.RunnerRelease{
		{Tag: "v2.339.0", Published: time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)},
		{Tag: "v2.338.0", Published: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)},
		{Tag: "v" + testutil.FakeRunnerVersion, Published: time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)},
	}
	now := func() time.Time { return time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) }
	d := DoctorOptions{APIURL: gh.URL, RunnerDir: testutil.FakeRunnerDir(t, "idle"), Now: now, Pins: []Pin{
		{Where: "image a", Version: Version{2, 339, 0}},
		{Where: "image b", Version: Version{2, 338, 0}},
	}}
	got := map[string]Check{}
	for _, c := range Doctor(context.Background(), d) {
		got[c.Name] = c
	}
	for name, want := range map[string]struct{ status, note, fix string }{
		"runner version (installed in " + d.RunnerDir + ")": {"fail", "GitHub refuses it since 2026-10-31", "actions-runner:2.339.0"},
		"runner version (image a)":                          {"ok", "is the newest", ""},
		"runner version (image b)":                          {"warn", "GitHub refuses it from 2026-12-20, in 17 days", "image/pin.sh 2.339.0"},
	} {
		c := got[name]
		if c.Status != want.status || !strings.Contains(c.Note, want.note) || !strings.Contains(c.Fix, want.fix) {
			t.Errorf("%s: %+v, want %+v", name, c, want)
		}
	}
	asked := 0
	for _, c := range gh.Calls() {
		if c == "GET /repos/actions/runner/releases" {
			asked++
		}
	}
	if asked != 1 {
		t.Errorf("releases read %d times for three versions, want once", asked)
	}
	if c := Doctor(context.Background(), DoctorOptions{APIURL: gh.URL, RunnerDir: t.TempDir()}); c[len(c)-1].Status != "skip" || !strings.Contains(c[len(c)-1].Note, "no Actions runner in") {
		t.Errorf("nothing to check: %+v", c[len(c)-1])
	}
}
