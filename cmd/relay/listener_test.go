package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

// TestListenerUsage: what the listener cannot work with is refused before any request,
// exit 2, naming the flag and the fix.
func TestListenerUsage(t *testing.T) {
	base := []string{"relay", "listener", "--org", "acme", "--scale-set", "relay", "--runner-version", "2.330.0"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"relay", "listener", "--org", "acme"}, "--scale-set is required"},
		{[]string{"relay", "listener", "--scale-set", "relay"}, "name exactly one of --repo"},
		{append(base[:6:6], "--starter", "kubernetes", "--job-template", "j.yaml"), "--runner-version is required"},
		{append(base[:6:6], "--runner-version", "two", "--starter", "kubernetes", "--job-template", "j.yaml"), `--runner-version "two"`},
		{base, "--starter is required"},
		{append(base, "--starter", "lambda"), `--starter "lambda"`},
		{append(base, "--starter", "container-apps"), "needs --container-apps-job"},
		{append(base, "--starter", "kubernetes"), "needs --job-template"},
		{append(base, "--starter", "kubernetes", "--job-template", "j.yaml", "--max-runners", "0"), "--max-runners 0"},
		{append(base, "--starter", "kubernetes", "--job-template", "j.yaml", "--metrics-address", "9102"), "is not HOST:PORT"},
		{append(base, "--starter", "kubernetes", "--job-template", "j.yaml", "--scale-set", "has space"), "without spaces"},
		{append(base, "--starter", "kubernetes", "--job-template", "j.yaml", "extra"), "takes no arguments"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb, func(string) string { return "" })
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, want 2 with %q:\n%s", tc.args[2:], code, tc.want, errb.String())
		}
	}
	// Without App credentials: exit 2 before any request.
	var errb bytes.Buffer
	code := run(context.Background(), append(base, "--starter", "kubernetes", "--job-template", "j.yaml"), io.Discard, &errb, func(string) string { return "" })
	if code != 2 || !strings.Contains(errb.String(), "no credentials") {
		t.Errorf("no credentials: exit %d\n%s", code, errb.String())
	}
}

// until waits, bounded, for cond: observable state of the fakes or a log, not a timer.
func until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitFor reads what the listener logs until a line holds want, and returns that line.
func waitFor(t *testing.T, logs *testutil.SyncBuffer, want string) string {
	t.Helper()
	var line string
	until(t, want+" in the logs:\n"+logs.String(), func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, want) {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

const listenerJobYAML = `metadata:
  labels:
    app: relay-runner
spec:
  template:
    spec:
      serviceAccountName: relay-runner
      automountServiceAccountToken: false
      containers:
        - name: runner
          image: ghcr.io/relaydev/relay-runner:v1
          args: [runner]
          resources: {requests: {cpu: "1", memory: 2Gi}}
`

// listenerFakes are the fakes a listener runs against: the GitHub App API, the broker
// fronting it, the Kubernetes API server, and the Job template and token files.
type listenerFakes struct {
	gh              *testutil.GitHubRunners
	b               *testutil.Broker
	kube            *testutil.KubeAPI
	tmpl, tokenFile string
}

func startListenerFakes(t testing.TB) listenerFakes {
	f := listenerFakes{gh: testutil.StartGitHubRunners(t, "acme"), b: testutil.StartBroker(t), kube: testutil.StartKubeAPI(t, "ci")}
	f.b.GitHub = f.gh
	dir := t.TempDir()
	f.tmpl, f.tokenFile = filepath.Join(dir, "runner-job.yaml"), filepath.Join(dir, "token")
	os.WriteFile(f.tmpl, []byte(listenerJobYAML), 0o644)
	os.WriteFile(f.tokenFile, []byte(f.kube.Token+"\n"), 0o600)
	return f
}

// kubeArgs are the listener's flags for the fakes' Kubernetes starter.
func (f listenerFakes) kubeArgs() []string {
	return []string{"--org", "acme", "--github-api-url", f.b.APIURL(), "--runner-version", testutil.FakeRunnerVersion, "--starter", "kubernetes",
		"--job-template", f.tmpl, "--kubernetes-namespace", "ci", "--kubernetes-api-server", f.kube.URL, "--kubernetes-ca-file", f.kube.CertFile,
		"--kubernetes-token-file", f.tokenFile}
}

// TestListenerWithKubernetes runs `relay listener` against the fake GitHub App API, the fake
// broker fronting it, and the fake API server: it creates the scale set, starts one Job per
// assigned job, each with the JIT config the broker made for its runner; the fake runners
// take their jobs; SIGTERM (the context) deletes the session and exits 0. The App key, the
// installation and registration tokens and every JIT config appear in no log line, no Job
// body (only in the Secrets) and no metric.
func TestListenerWithKubernetes(t *testing.T) {
	f := startListenerFakes(t)
	gh, b, kube := f.gh, f.b, f.kube
	env := map[string]string{"RELAY_GITHUB_APP_ID": gh.AppID, "RELAY_GITHUB_APP_KEY": string(gh.AppKey), "RELAY_CORRELATION_ID": "cid-listener"}
	args := append(append([]string{"relay", "listener"}, f.kubeArgs()...), "--scale-set", "relay-linux", "--labels", "linux,x64",
		"--metrics-address", "127.0.0.1:0", "--log-format", "json")
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testutil.SyncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, io.Discard, logs, func(k string) string { return env[k] }) }()

	created := waitFor(t, logs, `"event":"scale_set.created"`)
	var ev struct {
		ID int `json:"scale_set_id"`
	}
	json.Unmarshal([]byte(created), &ev)
	waitFor(t, logs, `"event":"session.opened"`)
	b.QueueJobs(ev.ID, 3)
	var jits, jobs []string
	for i := 0; i < 3; i++ {
		var name string
		select {
		case name = <-kube.Started:
		case <-time.After(20 * time.Second): // a guard against a hang, not synchronisation
			t.Fatalf("%d of 3 Jobs started\n%s", i, logs)
		}
		jit := kube.JIT(name)
		if err := b.TakeJob(jit); err != nil { // the pod's relay runner registering
			t.Fatalf("job %s: %v", name, err)
		}
		jits, jobs = append(jits, jit), append(jobs, name)
	}
	for i, jit := range jits {
		b.FinishJob(jit, "succeeded")
		kube.Complete(jobs[i])
	}
	waitFor(t, logs, `"event":"job.completed"`)
	addr := waitFor(t, logs, `"event":"metrics.listening"`)
	var ml struct{ Address string }
	json.Unmarshal([]byte(addr), &ml)
	resp, err := http.Get("http://" + ml.Address + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `relay_listener_started_total{scale_set="relay-linux"} 3`) {
		t.Errorf("metrics:\n%s", metrics)
	}

	// An administrator deletes the scale set: the listener makes it again and serves it.
	b.DeleteScaleSet(ev.ID)
	waitFor(t, logs, `"event":"scale_set.deleted"`)
	for strings.Count(logs.String(), `"event":"session.opened"`) < 2 {
		waitFor(t, logs, `"event":"scale_set.created","scale_set_id":2`)
	}
	b.QueueJobs(2, 1)
	select {
	case name := <-kube.Started:
		jit := kube.JIT(name)
		if err := b.TakeJob(jit); err != nil {
			t.Fatal(err)
		}
		jits = append(jits, jit)
	case <-time.After(20 * time.Second): // a guard against a hang, not synchronisation
		t.Fatalf("no Job for the recreated scale set\n%s", logs)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, logs)
	}

	out := logs.String()
	for _, want := range []string{`"event":"session.opened"`, `"event":"jobs.assigned"`, `"event":"execution.started"`, `"event":"job.started"`,
		`"event":"session.deleted"`, `"event":"runner.version"`} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in the logs", want)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(l, `"correlation_id":"cid-listener"`) {
			t.Errorf("a record without the correlation id: %s", l)
		}
	}
	// Secret planting: the key, tokens and configs stay where they belong.
	secrets := append([]string{"BEGIN RSA PRIVATE KEY", "ghs_", "AABBREG", kube.Token}, jits...)
	for _, jit := range jits {
		secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte(jit)))
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%.20q… is in the logs", s)
		}
		if strings.Contains(string(metrics), s) {
			t.Errorf("%.20q… is in the metrics", s)
		}
	}
	for _, c := range kube.Calls {
		if strings.HasSuffix(c.Path, "/secrets") {
			continue
		}
		for _, s := range secrets {
			if strings.Contains(string(c.Body), s) {
				t.Errorf("%.20q… is in %s %s", s, c.Method, c.Path)
			}
		}
	}
	var job struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Resources map[string]map[string]string `json:"resources"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	var made []byte
	for _, c := range kube.Calls {
		if c.Method == http.MethodPost && strings.HasSuffix(c.Path, "/jobs") {
			made = c.Body
			break
		}
	}
	json.Unmarshal(made, &job)
	if len(job.Spec.Template.Spec.Containers) != 1 || job.Spec.Template.Spec.Containers[0].Resources["requests"]["memory"] != "2Gi" {
		t.Errorf("the Job is not the YAML template's: %s", made)
	}
}

// TestDoctorListener: relay doctor --listener connects to the scale set service with the
// App, finds the runner group and says whether the scale set will be created, asks the API
// server what the service account may do, and checks --runner-version; a missing RBAC
// rule fails with the fix; all granted passes. It creates nothing.
func TestDoctorListener(t *testing.T) {
	f := startListenerFakes(t)
	gh, b, kube := f.gh, f.b, f.kube
	dir := t.TempDir()
	env := map[string]string{"RELAY_GITHUB_APP_ID": gh.AppID, "RELAY_GITHUB_APP_KEY": string(gh.AppKey)}
	args := append([]string{"doctor", "--config", filepath.Join(dir, "none.yaml"), "--runner-dir", dir, "--listener", "--scale-set", "relay-linux"}, f.kubeArgs()...)
	kube.Deny["create secrets"] = true
	code, out, stderr := runCLI(t, env, args...)
	for _, want := range []string{
		"ok   scale set service: connected for acme",
		"ok   runner group: Default (id 1)",
		"ok   scale set: relay-linux does not exist yet: the listener creates it",
		"FAIL starter: the service account may not: create secrets",
		"fix: bind the listener's service account",
		"ok   runner version (--runner-version (the runner image the listener starts)): runner " + testutil.FakeRunnerVersion,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if code != 1 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	delete(kube.Deny, "create secrets")
	if code, out, stderr := runCLI(t, env, args...); code != 0 || !strings.Contains(out, "ok   starter: kubernetes: every permission") {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	for _, r := range b.Requests() {
		if strings.HasPrefix(r, "POST /tenant/") {
			t.Errorf("doctor wrote to the scale set service: %s", r)
		}
	}
	for _, c := range kube.Calls {
		if !strings.HasSuffix(c.Path, "/selfsubjectaccessreviews") {
			t.Errorf("doctor called %s %s", c.Method, c.Path)
		}
	}
}
