//go:build integration

package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

const e2eJob = "/subscriptions/0000/resourceGroups/ci/providers/Microsoft.App/jobs/relay-runner"

// listenerProc is a `relay listener` subprocess and what it logs.
type listenerProc struct {
	cmd  *exec.Cmd
	logs *testutil.SyncBuffer
	done chan error
}

func startListener(t *testing.T, env []string, args ...string) *listenerProc {
	t.Helper()
	cmd := relayCmd(context.Background(), t.TempDir(), append([]string{"listener", "--log-format", "json", "--metrics-address", ""}, args...)...)
	cmd.Env = append(cmd.Env, env...)
	p := &listenerProc{cmd: cmd, logs: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr, cmd.Stdout = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return p
}

// stop sends SIGTERM and returns the exit code.
func (p *listenerProc) stop(t *testing.T) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second): // a guard against a hang, not synchronisation
		t.Fatalf("the listener did not stop on SIGTERM\n%s", p.logs)
	}
	return p.cmd.ProcessState.ExitCode()
}

func scaleSetID(t *testing.T, logs *testutil.SyncBuffer) int {
	line := waitFor(t, logs, `"event":"scale_set.`)
	var ev struct {
		ID int `json:"scale_set_id"`
	}
	json.Unmarshal([]byte(line), &ev)
	return ev.ID
}

// TestE2EListenerContainerApps: the listener process with the Container Apps starter and
// its managed identity; each execution is a `relay runner` process with the job's own
// identity (Key Vault read only) that reads its JIT config from the vault and runs its job.
// An execution whose runner never comes is stopped after --register-timeout, its runner
// removed, and the job it left gets a new execution. Every secret is deleted in the end;
// no JIT config is in a log, an ARM request or an execution's environment; SIGTERM exits 0.
func TestE2EListenerContainerApps(t *testing.T) {
	gh := testutil.StartGitHubRunners(t, "acme")
	b := testutil.StartBroker(t)
	b.GitHub = gh
	az := testutil.StartAzure(t)
	az.AddJob(e2eJob, "Manual", map[string]any{"name": "runner", "image": "ghcr.io/relaydev/relay-runner:v1", "resources": map[string]any{"cpu": 2, "memory": "4Gi"}})
	env := append([]string{"RELAY_GITHUB_APP_ID=" + gh.AppID, "RELAY_GITHUB_APP_KEY=" + string(gh.AppKey)}, az.ListenerEnv()...)
	p := startListener(t, env, "--org", "acme", "--github-api-url", b.APIURL(), "--scale-set", "relay-aca", "--runner-version", testutil.FakeRunnerVersion,
		"--starter", "container-apps", "--container-apps-job", e2eJob, "--key-vault", az.URL, "--arm-endpoint", az.URL, "--register-timeout", "6s")
	id := scaleSetID(t, p.logs)
	waitFor(t, p.logs, `"event":"session.opened"`)
	b.QueueJobs(id, 3)
	until(t, "3 executions", func() bool { return len(az.Executions()) == 3 })

	runIn := func(execution string) result {
		e := az.Env(execution)
		dir := testutil.FakeRunnerDir(t, "scaleset")
		jobEnv := append(az.JobEnv(), "RELAY_JIT_CONFIG_SECRET="+e["RELAY_JIT_CONFIG_SECRET"], "RELAY_RUNNER_NAME="+e["RELAY_RUNNER_NAME"], "RELAY_RUNNER_DIR="+dir,
			"RELAY_CHECK_RUNNER_VERSION=false")
		r := runRelayEnv(t, dir, jobEnv, "runner")
		az.Finish(execution, map[bool]string{true: "Succeeded", false: "Failed"}[r.code == 0])
		return r
	}
	var names []string
	for n := range az.Executions() {
		names = append(names, n)
	}
	var runnerLogs string
	results := make(chan result, 2)
	for _, n := range names[:2] { // both at once: well within the register timeout
		go func() { results <- runIn(n) }()
	}
	for range 2 {
		r := <-results
		if r.code != 0 {
			t.Fatalf("an execution: exit %d\n%s", r.code, r.stderr)
		}
		runnerLogs += r.stderr
	}
	// The third never runs its runner: stopped, and the job it left gets a fourth.
	until(t, "the stop of the execution whose runner never came", func() bool { return az.Executions()[names[2]] == "Stopped" })
	until(t, "a new execution for the waiting job", func() bool { return len(az.Executions()) == 4 })
	for n, st := range az.Executions() {
		if st == "Running" {
			if r := runIn(n); r.code != 0 {
				t.Fatalf("execution %s: exit %d\n%s", n, r.code, r.stderr)
			} else {
				runnerLogs += r.stderr
			}
		}
	}
	until(t, "every job taken", func() bool { return b.Waiting(id) == 0 })
	until(t, "every JIT secret deleted", func() bool { return len(az.Secrets()) == 0 })
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.logs)
	}
	logs := p.logs.String()
	for _, want := range []string{`"event":"execution.stopped","execution":"` + names[2], `"reason":"it took no job within the register timeout"`,
		`"event":"session.deleted"`, `"event":"execution.finished"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %s in\n%s", want, logs)
		}
	}
	// Secret planting: the configs were only ever in the vault's PUT bodies.
	var jits []string
	for _, c := range az.CallLog() {
		if c.Method == "PUT" && strings.HasPrefix(c.Path, "/secrets/") {
			var s struct{ Value string }
			json.Unmarshal(c.Body, &s)
			jits = append(jits, s.Value)
		}
	}
	if len(jits) != 4 {
		t.Fatalf("%d JIT secrets written, want 4", len(jits))
	}
	for _, jit := range append(jits, "BEGIN RSA PRIVATE KEY") {
		if strings.Contains(logs, jit) || strings.Contains(runnerLogs, jit) {
			t.Errorf("a secret is in the logs: %.24q…", jit)
		}
		for _, c := range az.CallLog() {
			if !(c.Method == "PUT" && strings.HasPrefix(c.Path, "/secrets/")) && strings.Contains(string(c.Body), jit) {
				t.Errorf("a JIT config is in %s %s", c.Method, c.Path)
			}
		}
		for n := range az.Executions() {
			for k, v := range az.Env(n) {
				if strings.Contains(v, jit) {
					t.Errorf("a JIT config is in execution %s's %s", n, k)
				}
			}
		}
	}
}

// TestE2EListenerKilledMidBurst: the listener is killed (SIGKILL: no cleanup, its session
// left behind) while a burst of 20 jobs is being started; the one it restarts with waits
// out the lapsed session, counts the Jobs that run, and starts exactly the rest: 20 Jobs,
// each with its own JIT config that registers once, no job left without a runner.
func TestE2EListenerKilledMidBurst(t *testing.T) {
	f := startListenerFakes(t)
	gh, b, kube := f.gh, f.b, f.kube
	b.SessionIdle = 500 * time.Millisecond
	env := []string{"RELAY_GITHUB_APP_ID=" + gh.AppID, "RELAY_GITHUB_APP_KEY=" + string(gh.AppKey)}
	args := append(f.kubeArgs(), "--scale-set", "relay-k8s", "--max-runners", "50")
	kube.HoldAfter(5)
	first := startListener(t, env, args...)
	id := scaleSetID(t, first.logs)
	waitFor(t, first.logs, `"event":"session.opened"`)
	b.QueueJobs(id, 20)
	started := map[string]bool{}
	take := func(n int) {
		for i := 0; i < n; i++ {
			select {
			case name := <-kube.Started:
				if started[name] {
					t.Fatalf("job %s started twice", name)
				}
				started[name] = true
				if err := b.TakeJob(kube.JIT(name)); err != nil {
					t.Fatalf("job %s: %v", name, err)
				}
			case <-time.After(30 * time.Second): // a guard against a hang, not synchronisation
				t.Fatalf("%d jobs started", len(started))
			}
		}
	}
	take(5)
	first.cmd.Process.Kill() // mid-burst: the sixth Job's creation is in flight
	<-first.done
	kube.Release()

	second := startListener(t, env, args...)
	take(15)
	until(t, "every job taken", func() bool { return b.Waiting(id) == 0 })
	if code := second.stop(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, second.logs)
	}
	if len(kube.Jobs) != 20 || len(started) != 20 {
		t.Fatalf("%d Jobs, %d started, for 20 jobs\n%s", len(kube.Jobs), len(started), second.logs)
	}
	logs := second.logs.String()
	if !strings.Contains(logs, `"event":"scale_set.reused"`) {
		t.Errorf("the restarted listener did not reuse the scale set:\n%s", logs)
	}
	if n := strings.Count(logs, `"event":"execution.started"`); n != 15 {
		t.Errorf("the restarted listener started %d executions, want 15", n)
	}
}
