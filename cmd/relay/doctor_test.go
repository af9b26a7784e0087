package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

func TestDoctor(t *testing.T) {
	type check struct{ Name, Status, Note, Fix string }
	for _, tc := range []struct {
		name   string
		perms  map[string]string
		env    map[string]string
		config string // relay.yaml body; REG is replaced by a registry
		acr    bool   // builder.kind acr against the ACR Tasks fake, whose identity may only push
		code   int
		want   map[string]string // check name prefix -> status
		fix    string
	}{
		{name: "all good", code: 0, want: map[string]string{"runner credential": "ok", "runner credential may register runners (JIT configs)": "ok",
			"job queue readable (the autoscaler's view)": "ok", "workflow grants id-token: write": "skip", "relay.yaml": "skip"}},
		{name: "no administration permission", perms: map[string]string{"actions": "read", "metadata": "read"}, code: 1,
			want: map[string]string{"runner credential may register runners (JIT configs)": "fail"}, fix: "Administration: write"},
		{name: "no actions permission", perms: map[string]string{"administration": "write"}, code: 1,
			want: map[string]string{"job queue readable (the autoscaler's view)": "fail"}, fix: "Actions: read"},
		{name: "in a job without id-token", env: map[string]string{"GITHUB_ACTIONS": "true"}, code: 1,
			want: map[string]string{"workflow grants id-token: write": "fail"}, fix: "permissions: id-token: write"},
		{name: "with relay.yaml", config: goodConfigFor("REG"), env: map[string]string{"SIGSTORE_ID_TOKEN": "eyJ.test.token"}, code: 0,
			want: map[string]string{"relay.yaml": "ok", "builder local": "ok", "push access to REG/acme/hello": "ok"}},
		{name: "acr builder without the rights to run builds", acr: true, env: map[string]string{"SIGSTORE_ID_TOKEN": "eyJ.test.token"}, code: 1,
			want: map[string]string{"builder acr": "fail"}, fix: "may not Microsoft.ContainerRegistry/registries/listBuildSourceUploadUrl/action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gh := testutil.StartGitHubRunners(t, "acme/shop")
			if tc.perms != nil {
				gh.Permissions = tc.perms
			}
			env := map[string]string{"RELAY_GITHUB_APP_ID": gh.AppID, "RELAY_GITHUB_APP_KEY": string(gh.AppKey)}
			for k, v := range tc.env {
				env[k] = v
			}
			dir := t.TempDir()
			cfg := filepath.Join(dir, "relay.yaml")
			reg := testutil.Registry(t, true)
			if tc.acr {
				fake := testutil.StartACRTasks(t, nil)
				fake.Actions = []string{"Microsoft.ContainerRegistry/registries/pull/read", "Microsoft.ContainerRegistry/registries/push/write"}
				for _, kv := range fake.IdentityEnv() { // azidentity reads the process environment
					k, v, _ := strings.Cut(kv, "=")
					t.Setenv(k, v)
				}
				tc.config = strings.Replace(goodConfigFor("REG"), "builder: {kind: local, registry: REG/build}",
					"builder: {kind: acr, registry: REG/build, acr: {subscription: sub-1, resource_group: rg-build, registry: relayacr, arm_endpoint: "+fake.URL+"}}", 1)
			}
			if tc.config != "" {
				gitRepo(t, dir)
				os.WriteFile(cfg, []byte(strings.ReplaceAll(tc.config, "REG", reg)), 0o644)
			}
			code, out, stderr := runCLI(t, env, "doctor", "--repo", "acme/shop", "--github-api-url", gh.URL, "--config", cfg, "--output", "json")
			var rep struct{ Checks []check }
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("output is not JSON: %v\n%s\n%s", err, out, stderr)
			}
			got := map[string]check{}
			for _, c := range rep.Checks {
				got[strings.ReplaceAll(c.Name, reg, "REG")] = c
			}
			for name, status := range tc.want {
				if got[name].Status != status {
					t.Errorf("%s: %q (%s), want %q\nall: %+v", name, got[name].Status, got[name].Note, status, rep.Checks)
				}
			}
			if tc.fix != "" && !strings.Contains(out, tc.fix) {
				t.Errorf("no fix %q in\n%s", tc.fix, out)
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d\n%s\n%s", code, tc.code, stderr, out)
			}
			for _, c := range gh.Calls() {
				if !strings.HasPrefix(c, "GET ") && !strings.HasSuffix(c, "/access_tokens") {
					t.Errorf("doctor wrote: %s", c)
				}
			}
		})
	}
}

// gitRepo makes dir a git repository with one commit tagged v0.1.0.
func gitRepo(t *testing.T, dir string) {
	t.Helper()
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"commit", "-q", "--allow-empty", "-m", "init"}, {"tag", "v0.1.0"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
}

func goodConfigFor(reg string) string {
	return `version: 1
source: {repo: ., ref: v0.1.0, url: https://github.com/acme/app}
builder: {kind: local, registry: ` + reg + `/build}
images:
  - name: hello
    local: {go: {main: .}}
    targets: [` + reg + `/acme/hello]
signing: {mode: keyless}
release: {target: dir}
`
}

// relay doctor in text form: one line per check, the fix under a failure.
func TestDoctorText(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	gh.Permissions = map[string]string{"actions": "read"}
	var out, errb bytes.Buffer
	env := map[string]string{"RELAY_GITHUB_APP_ID": gh.AppID, "RELAY_GITHUB_APP_KEY": string(gh.AppKey)}
	code := run(context.Background(), []string{"relay", "doctor", "--repo", "acme/shop", "--github-api-url", gh.URL, "--config", filepath.Join(t.TempDir(), "none.yaml")}, &out, &errb, func(k string) string { return env[k] })
	if code != 1 || !strings.Contains(out.String(), "FAIL runner credential may register runners (JIT configs)") || !strings.Contains(out.String(), "     fix: give the GitHub App Administration: write") {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
}

// relay doctor reads the installed runner's version from RELAY_RUNNER_DIR (the runner
// image sets it) and the versions relay.yaml pins as actions-runner bases, and fails on a
// version GitHub refuses, with the re-pin.
func TestDoctorRunnerVersion(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	// Long ago, so the verdicts hold whenever the test runs.
	gh.Releases = []testutil.RunnerRelease{{Tag: "v" + testutil.FakeRunnerVersion, Published: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}}
	reg := testutil.Registry(t, true)
	dir := t.TempDir()
	gitRepo(t, dir)
	cfg := filepath.Join(dir, "relay.yaml")
	body := strings.Replace(goodConfigFor(reg), "local: {go: {main: .}}",
		"local: {base: "+reg+"/actions/actions-runner:2.300.0@sha256:e5496277be5d09bc968b3d64911b74e219ac4a3f2edce956a3ecf9271bea1ef4, go: {main: .}}", 1)
	os.WriteFile(cfg, []byte(body), 0o644)
	runnerDir := testutil.FakeRunnerDir(t, "idle")
	env := map[string]string{"RELAY_RUNNER_DIR": runnerDir, "SIGSTORE_ID_TOKEN": "eyJ.test.token"}
	code, out, stderr := runCLI(t, env, "doctor", "--github-api-url", gh.URL, "--config", cfg)
	installed := "ok   runner version (installed in " + runnerDir + "): runner " + testutil.FakeRunnerVersion + " is the newest actions/runner release (2020-01-01)"
	pinned := "FAIL runner version (image hello's base in " + cfg + "): runner 2.300.0 is more than 30 days behind: GitHub refuses it since 2020-01-31"
	if code != 1 || !strings.Contains(out, installed) || !strings.Contains(out, pinned) || !strings.Contains(out, "fix: re-pin the runner image's base on ghcr.io/actions/actions-runner:"+testutil.FakeRunnerVersion) {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	for _, c := range gh.Calls() {
		if c != "GET /repos/actions/runner/releases" {
			t.Errorf("unexpected call without a scope: %s", c)
		}
	}
}
