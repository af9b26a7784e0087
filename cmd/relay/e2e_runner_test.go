//go:build integration

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

func runnerEnv(gh *testutil.GitHubRunners) []string {
	return []string{"RELAY_GITHUB_APP_ID=" + gh.AppID, "RELAY_GITHUB_APP_KEY=" + string(gh.AppKey), "RELAY_GITHUB_API_URL=" + gh.URL, "RELAY_REPO=acme/shop"}
}

// TestE2ERunnerAsPID1 runs `relay runner` as PID 1 of a new PID namespace, as in a
// container: the runner leaves a process behind that is re-parented to relay, which reaps
// it, and the job's result is still relay's exit code.
func TestE2ERunnerAsPID1(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	dir := testutil.FakeRunnerDir(t, "orphan")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--pid", "--fork", "--mount-proc", os.Args[0], "runner", "--runner-dir", dir, "--log-level", "debug")
	cmd.Env = append(append(os.Environ(), "RELAY_E2E_EXEC=1", "RELAY_CORRELATION_ID=e2e-run"), runnerEnv(gh)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("relay runner as PID 1: %v\n%s", err, out)
	}
	orphan, _ := os.ReadFile(filepath.Join(dir, "orphan.pid"))
	if len(orphan) == 0 || !strings.Contains(string(out), `"event":"runner.reaped","pid":`+string(orphan)) {
		t.Fatalf("the orphan (pid %s in the namespace) was not reaped:\n%s", orphan, out)
	}
	if len(gh.Runners()) != 0 {
		t.Fatalf("registration left behind: %+v", gh.Runners())
	}
}

// TestE2ERunnerKilled kills relay (SIGKILL: no cleanup possible) while its runner waits for
// a job; the registration stays behind, and the next replica's start removes it.
func TestE2ERunnerKilled(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme/shop")
	dir := testutil.FakeRunnerDir(t, "idle")
	cmd := relayCmd(context.Background(), dir, "runner", "--runner-dir", dir)
	cmd.Env = append(cmd.Env, runnerEnv(gh)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the runner is up (its pid file), read from disk, bounded.
	var pid int
	for deadline := time.Now().Add(30 * time.Second); pid == 0; {
		b, _ := os.ReadFile(filepath.Join(dir, "pid"))
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		if pid == 0 && time.Now().After(deadline) {
			t.Fatal("the runner never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	cmd.Process.Kill()
	cmd.Wait()
	left := gh.Runners()
	if len(left) != 1 {
		t.Fatalf("after SIGKILL: %+v", left)
	}
	syscall.Kill(-pid, syscall.SIGKILL)

	next := testutil.FakeRunnerDir(t, "success")
	r := runRelayEnv(t, next, runnerEnv(gh), "runner", "--runner-dir", next, "--orphan-age", "1ms")
	if r.code != 0 || !strings.Contains(r.stderr, `"orphan":"`+left[0].Name+`"`) {
		t.Fatalf("next replica: exit %d\n%s", r.code, r.stderr)
	}
	if rs := gh.Runners(); len(rs) != 0 {
		t.Fatalf("registrations left: %+v", rs)
	}
}
