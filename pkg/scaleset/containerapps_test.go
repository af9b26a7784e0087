package scaleset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

const caJob = "/subscriptions/0000/resourceGroups/ci/providers/Microsoft.App/jobs/relay-runner"

func newContainerApps(t *testing.T, listener string) (*ContainerApps, *testutil.Azure) {
	t.Helper()
	az := testutil.StartAzure(t)
	az.AddJob(caJob, "Manual",
		map[string]any{"name": "runner", "image": "ghcr.io/relaydev/relay-runner:v1", "resources": map[string]any{"cpu": 2, "memory": "4Gi"},
			"env": []any{map[string]any{"name": "RELAY_ORG", "value": "acme"}}, "probes": []any{}},
		map[string]any{"name": "sidecar", "image": "busybox"})
	c, err := NewContainerApps(ContainerAppsOptions{Job: caJob, Vault: az.URL, Endpoint: az.URL, Token: az.Token, Listener: listener, HTTP: az.Client(),
		Now: func() time.Time { return time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) }, Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	return c, az
}

// TestContainerAppsStarter: the JIT config goes to the vault, tagged and expiring; the
// execution, started with the job's whole template, is told only where it is; the config
// is in no ARM request; Running finds this listener's running executions across pages;
// Stop stops; Release deletes and purges the secret.
func TestContainerAppsStarter(t *testing.T) {
	ctx := context.Background()
	c, az := newContainerApps(t, "relay-listener")
	const jit = "eyIucnVubmVyIjoiczNjcjN0In0="
	e, err := c.Start(ctx, Runner{ID: 107, Name: "relay_runner.7"}, jit)
	if err != nil || !strings.HasPrefix(e.Name, "relay-runner-") || e.RunnerID != 107 || e.Runner != "relay_runner.7" {
		t.Fatalf("start: %+v %v", e, err)
	}
	if az.Secret("relay-jit-relay-runner-7") != jit {
		t.Fatalf("secrets: %v", az.Secrets())
	}
	env := az.Env(e.Name)
	if env["RELAY_JIT_CONFIG_SECRET"] != az.URL+"/secrets/relay-jit-relay-runner-7" || env["RELAY_RUNNER_NAME"] != "relay_runner.7" ||
		env["RELAY_RUNNER_ID"] != "107" || env["RELAY_LISTENER_NAME"] != "relay-listener" || env["RELAY_ORG"] != "acme" {
		t.Fatalf("execution env: %v", env)
	}
	var start string
	for _, call := range az.CallLog() {
		if strings.HasPrefix(call.Path, "/secrets/") && call.Method == http.MethodPut {
			for _, want := range []string{`"exp":` + fmt.Sprint(time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC).Unix()), `"relay-listener":"relay-listener"`, `"contentType":"application/vnd.relay.jitconfig"`} {
				if !strings.Contains(string(call.Body), want) {
					t.Errorf("secret body lacks %s: %s", want, call.Body)
				}
			}
			continue
		}
		if strings.Contains(string(call.Body), jit) { // secret planting
			t.Errorf("the JIT config is in %s %s", call.Method, call.Path)
		}
		if strings.HasSuffix(strings.SplitN(call.Path, "?", 2)[0], "/start") {
			start = string(call.Body)
		}
	}
	if !strings.Contains(start, `"image":"busybox"`) || !strings.Contains(start, `"memory":"4Gi"`) || strings.Contains(start, "probes") {
		t.Errorf("start template: %s", start)
	}

	// Another listener's execution and ended ones are not this listener's running ones.
	other, _ := NewContainerApps(ContainerAppsOptions{Job: caJob, Vault: az.URL, Endpoint: az.URL, Token: az.Token, Listener: "other", HTTP: az.Client(),
		Sleep: func(context.Context, time.Duration) error { return nil }})
	other.Start(ctx, Runner{ID: 1, Name: "theirs"}, "their-config")
	var names []string
	for i := 0; i < 11; i++ {
		x, err := c.Start(ctx, Runner{ID: int64(200 + i), Name: fmt.Sprintf("relay-%d", i)}, fmt.Sprintf("cfg-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, x.Name)
	}
	az.Finish(names[0], "Succeeded")
	running, err := c.Running(ctx)
	if err != nil || len(running) != 11 {
		t.Fatalf("running: %d %v", len(running), err)
	}
	for _, r := range running {
		if r.Name == names[0] || r.Runner == "theirs" || r.Started.IsZero() || r.RunnerID == 0 {
			t.Fatalf("running: %+v", r)
		}
	}
	// The first listing swept the secret of the execution that ended; theirs is kept.
	if az.Secret("relay-jit-relay-0") != "" || az.Secret("relay-jit-theirs") == "" || az.Secret("relay-jit-relay-1") == "" {
		t.Fatalf("after the sweep: %v", az.Secrets())
	}
	if err := c.Stop(ctx, e); err != nil || az.Executions()[e.Name] != "Stopped" {
		t.Fatalf("stop: %v %v", err, az.Executions()[e.Name])
	}
	if err := c.Stop(ctx, Execution{Name: "gone"}); err != nil {
		t.Fatalf("stopping what is gone: %v", err)
	}
	if err := c.Release(ctx, e); err != nil || az.Secret("relay-jit-relay-runner-7") != "" || az.Deleted() != 0 {
		t.Fatalf("release: %v, %v, %d soft-deleted", err, az.Secrets(), az.Deleted())
	}
	if err := c.Release(ctx, e); err != nil {
		t.Fatalf("releasing twice: %v", err)
	}
}

// TestContainerAppsRefusals: a job the listener cannot start names the permission; a
// failed start leaves no secret; an event-triggered job and bad options are refused.
func TestContainerAppsRefusals(t *testing.T) {
	ctx := context.Background()
	c, az := newContainerApps(t, "l")
	az.Deny["start/action"] = true
	_, err := c.Start(ctx, Runner{ID: 1, Name: "r1"}, "cfg")
	var ae *AzureError
	if !errors.As(err, &ae) || ae.Status != 403 || !strings.Contains(err.Error(), "Microsoft.App/jobs/start/action") {
		t.Fatalf("%v", err)
	}
	if len(az.Secrets()) != 0 {
		t.Fatalf("a failed start left its secret: %v", az.Secrets())
	}
	az.Deny["start/action"], az.Deny["set secret"] = false, true
	if _, err := c.Start(ctx, Runner{ID: 2, Name: "r2"}, "cfg"); err == nil || !strings.Contains(err.Error(), "Key Vault Secrets Officer") {
		t.Fatalf("%v", err)
	}
	if len(az.Executions()) != 0 {
		t.Fatal("an execution started without its secret")
	}

	az.AddJob("/subscriptions/0000/resourceGroups/ci/providers/Microsoft.App/jobs/event", "Event", map[string]any{"name": "r", "image": "x"})
	ev, _ := NewContainerApps(ContainerAppsOptions{Job: "/subscriptions/0000/resourceGroups/ci/providers/Microsoft.App/jobs/event", Vault: az.URL, Endpoint: az.URL, Token: az.Token, Listener: "l", HTTP: az.Client()})
	if _, err := ev.Start(ctx, Runner{ID: 3, Name: "r3"}, "cfg"); err == nil || !strings.Contains(err.Error(), "Manual") {
		t.Fatalf("event job: %v", err)
	}
	for _, bad := range []ContainerAppsOptions{
		{Job: "relay-runner", Vault: "https://kv.vault.azure.net", Token: az.Token, Listener: "l"},
		{Job: caJob, Vault: "http://kv.vault.azure.net", Token: az.Token, Listener: "l"},
		{Job: caJob, Vault: "https://kv.vault.azure.net/secrets/x", Token: az.Token, Listener: "l"},
		{Job: caJob, Vault: "https://kv.vault.azure.net", Listener: "l"},
	} {
		if _, err := NewContainerApps(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// watchedApps is the Container Apps starter, saying when each start and release returned.
type watchedApps struct {
	*ContainerApps
	started, released chan string
}

func (w watchedApps) Start(ctx context.Context, r Runner, jit string) (Execution, error) {
	e, err := w.ContainerApps.Start(ctx, r, jit)
	if err == nil {
		w.started <- r.Name
	}
	return e, err
}

func (w watchedApps) Release(ctx context.Context, e Execution) error {
	err := w.ContainerApps.Release(ctx, e)
	if err == nil {
		w.released <- e.Runner
	}
	return err
}

// TestListenWithContainerApps: assigned jobs become executions; each runner reads its
// config with the job identity's read-only token and takes its job, and the listener then
// deletes the secret.
func TestListenWithContainerApps(t *testing.T) {
	r := newRig(t)
	c, az := newContainerApps(t, "relay-listener")
	c.o.Now = time.Now // the listener's clock: executions are young
	w := watchedApps{ContainerApps: c, started: make(chan string, 10), released: make(chan string, 10)}
	o := r.opts(5)
	o.Starter = w
	stop := r.run(o)
	r.b.QueueJobs(r.ss.ID, 3)
	for i := 0; i < 3; i++ {
		recv(t, w.started)
	}
	if len(az.Secrets()) != 3 {
		t.Fatalf("secrets %v", az.Secrets())
	}
	for name := range az.Executions() {
		req, _ := http.NewRequest(http.MethodGet, az.Env(name)["RELAY_JIT_CONFIG_SECRET"]+"?api-version=7.4", nil)
		req.Header.Set("Authorization", "Bearer "+az.ReaderToken)
		resp, err := az.Client().Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("the execution cannot read its config: %v %v", err, resp.Status)
		}
		var v struct{ Value string }
		json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err := r.b.TakeJob(v.Value); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		recv(t, w.released)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(az.Secrets()) != 0 || az.Deleted() != 0 {
		t.Fatalf("left in the vault: %v, %d soft-deleted", az.Secrets(), az.Deleted())
	}
}

// TestStarterPermissions: each starter names the rules its identity lacks, read from the
// platform (ARM's permissions API and the vault; SelfSubjectAccessReview).
func TestStarterPermissions(t *testing.T) {
	ctx := context.Background()
	c, az := newContainerApps(t, "l")
	if m, err := c.Missing(ctx); err != nil || len(m) != 0 {
		t.Fatalf("all granted: %v %v", m, err)
	}
	az.Deny["start/action"], az.Deny["list secrets"] = true, true
	if m, err := c.Missing(ctx); err != nil || strings.Join(m, ",") != "Microsoft.App/jobs/start/action,Key Vault Secrets Officer on "+az.URL {
		t.Fatalf("denied: %v %v", m, err)
	}
	k, kube, _ := newKube(t)
	if m, err := k.Missing(ctx); err != nil || len(m) != 0 {
		t.Fatalf("all granted: %v %v", m, err)
	}
	kube.Deny["create secrets"], kube.Deny["patch jobs"] = true, true
	if m, err := k.Missing(ctx); err != nil || strings.Join(m, ",") != "patch jobs,create secrets" {
		t.Fatalf("denied: %v %v", m, err)
	}
	for _, tc := range []struct {
		patterns []string
		want     bool
	}{{[]string{"*"}, true}, {[]string{"Microsoft.App/*"}, true}, {[]string{"microsoft.app/jobs/start/action"}, true}, {[]string{"Microsoft.App/jobs/read"}, false}, {nil, false}} {
		if matchesAction(tc.patterns, "Microsoft.App/jobs/start/action") != tc.want {
			t.Errorf("%v: want %v", tc.patterns, tc.want)
		}
	}
}
