package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaydev/relay/internal/testutil"
)

// TestRunnerKeepsSecretsFromTheJob plants credentials in relay's environment (the App key,
// tokens, relay's own settings) and runs `relay runner` through a job: none of them reaches
// the runner's environment or arguments, nor the logs, even when --pass-env asks for them;
// the registration is gone afterwards.
func TestRunnerKeepsSecretsFromTheJob(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	dir := testutil.FakeRunnerDir(t, "success")
	planted := map[string]string{
		"RELAY_GITHUB_APP_ID": gh.AppID, "RELAY_GITHUB_APP_KEY": string(gh.AppKey), "GITHUB_TOKEN": "ghp_plantedPersonalToken0123",
		"RELAY_SOURCE_TOKEN": "planted-source-token", "COSIGN_PASSWORD": "planted-cosign-password", "RELAY_RUNNER_DIR": dir,
		"RELAY_GITHUB_API_URL": gh.URL, "RELAY_PASS_ENV": "GITHUB_TOKEN,RELAY_SOURCE_TOKEN,LANG", "LANG": "C.UTF-8",
	}
	for k, v := range planted {
		t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"relay", "runner", "--repo", "acme/shop", "--log-format", "json"}, &out, &errb, os.Getenv)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errb.String())
	}
	env, _ := os.ReadFile(filepath.Join(dir, "run.env"))
	args, _ := os.ReadFile(filepath.Join(dir, "run.args"))
	if !strings.Contains(string(env), "LANG=C.UTF-8") || !strings.Contains(string(args), "--jitconfig") {
		t.Fatalf("the runner did not get its configuration:\nenv:\n%s\nargs:\n%s", env, args)
	}
	secrets := []string{"BEGIN RSA PRIVATE KEY", "ghp_plantedPersonalToken0123", "planted-source-token", "planted-cosign-password", "ghs_fakeinstallation"}
	for _, s := range secrets {
		for what, b := range map[string]string{"environment": string(env), "arguments": string(args), "logs": errb.String() + out.String()} {
			if strings.Contains(b, s) {
				t.Errorf("%q reached the runner's %s", s, what)
			}
		}
	}
	if strings.Contains(string(env), "RELAY_") {
		t.Errorf("relay variables reached the runner:\n%s", env)
	}
	jit := strings.TrimPrefix(strings.SplitN(string(args), "\n", 3)[1], "")
	if jit == "" || strings.Contains(errb.String(), jit) {
		t.Errorf("the JIT config reached the logs (or was not passed)")
	}
	if rs := gh.Runners(); len(rs) != 0 {
		t.Errorf("registration left behind: %+v", rs)
	}
	if !strings.Contains(errb.String(), `"event":"runner.exited"`) || !strings.Contains(errb.String(), `"outcome":"job-succeeded"`) {
		t.Errorf("no runner.exited event:\n%s", errb.String())
	}
}

// Exit codes reach the process: a bad flag is 2, a registration the App may not make is 3.
func TestRunnerExitCodes(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	dir := testutil.FakeRunnerDir(t, "success")
	t.Setenv("RELAY_GITHUB_APP_ID", gh.AppID)
	t.Setenv("RELAY_GITHUB_APP_KEY", string(gh.AppKey))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--repo", "acme/shop", "--org", "acme"}, 2, "exactly one of"},
		{[]string{"--repo", "acme/shop", "--runner-dir", t.TempDir()}, 2, "no executable run.sh"},
		{[]string{"--org", "other"}, 3, "is the App installed there"},
		{[]string{"--enterprise", "acme"}, 2, "RELAY_GITHUB_TOKEN"},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"relay", "runner", "--github-api-url", gh.URL, "--runner-dir", dir}, tc.args...)
		if code := run(context.Background(), args, &out, &errb, os.Getenv); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", tc.args, code, tc.code, tc.want, errb.String())
		}
	}
	// Credentials and an API root that cannot work are the deployment's to fix (2), found
	// before any request; a retry with backoff (3) would only repeat them.
	calls := len(gh.Calls())
	for _, tc := range []struct {
		env  map[string]string
		api  string
		want string
	}{
		{map[string]string{"RELAY_GITHUB_APP_ID": "my-app"}, gh.URL, `RELAY_GITHUB_APP_ID "my-app" is not a GitHub App id`},
		{map[string]string{"RELAY_GITHUB_APP_KEY": "not a key"}, gh.URL, "private key is not PEM"},
		{nil, "api.github.com", `--github-api-url "api.github.com" is not an API root`},
		{nil, "https://api.github.com/?x=1", "is not an API root"},
	} {
		env := map[string]string{"RELAY_GITHUB_APP_ID": gh.AppID, "RELAY_GITHUB_APP_KEY": string(gh.AppKey)}
		for k, v := range tc.env {
			env[k] = v
		}
		var out, errb bytes.Buffer
		args := []string{"relay", "runner", "--repo", "acme/shop", "--github-api-url", tc.api, "--runner-dir", dir}
		if code := run(context.Background(), args, &out, &errb, func(k string) string { return env[k] }); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v %s: exit %d, want 2 with %q:\n%s", tc.env, tc.api, code, tc.want, errb.String())
		}
	}
	if len(gh.Calls()) != calls {
		t.Errorf("bad credentials cost %d API calls", len(gh.Calls())-calls)
	}
}

// TestRunnerHandedJITFile: `relay runner` in a Job relay listener started reads the JIT
// config from the mounted file, runs the runner with it and no credential, never logs it,
// and removes the file when it can; an App credential beside it is refused (exit 2).
func TestRunnerHandedJITFile(t *testing.T) {
	dir := testutil.FakeRunnerDir(t, "success")
	jit := testutil.EncodeJITConfig(4712, "relay-linux-0a1b2c3d4e", "relay-linux", "https://broker.example/tenant/", "private-key-2")
	file := filepath.Join(t.TempDir(), "jitconfig")
	os.WriteFile(file, []byte(jit+"\n"), 0o400)
	env := map[string]string{"RELAY_JIT_CONFIG_FILE": file, "RELAY_RUNNER_DIR": dir, "RELAY_CHECK_RUNNER_VERSION": "false", "RELAY_RUNNER_NAME": "relay-linux-0a1b2c3d4e"}
	code, out, stderr := runCLI(t, env, "runner", "--log-format", "json")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "run.args"))
	if string(args) != "--jitconfig\n"+jit {
		t.Fatalf("run.sh args %q", args)
	}
	if strings.Contains(stderr, jit) || !strings.Contains(stderr, `"event":"runner.handed_back"`) || !strings.Contains(stderr, `"runner_name":"relay-linux-0a1b2c3d4e"`) {
		t.Fatalf("logs:\n%s", stderr)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Error("the JIT config file was left after reading")
	}

	os.WriteFile(file, []byte(jit), 0o400)
	env["RELAY_GITHUB_APP_ID"] = "31337"
	code, _, stderr = runCLI(t, env, "runner")
	if code != 2 || !strings.Contains(stderr, "RELAY_GITHUB_APP_ID is set beside a handed-in JIT config") {
		t.Fatalf("with an App id: exit %d\n%s", code, stderr)
	}
}
