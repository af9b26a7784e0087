package scaleset

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

const runnerJob = `{"metadata": {"labels": {"app": "relay-runner"}},
 "spec": {"template": {"spec": {"serviceAccountName": "runner",
   "containers": [{"name": "runner", "image": "ghcr.io/relaydev/relay-runner:v1", "args": ["runner"]}]}}}}`

func newKube(t *testing.T) (*Kubernetes, *testutil.KubeAPI, *int) {
	t.Helper()
	api := testutil.StartKubeAPI(t, "ci")
	reads := 0
	k, err := NewKubernetes(KubernetesOptions{APIServer: api.URL, Namespace: "ci", Listener: "relay-listener", Job: []byte(runnerJob), HTTP: api.Client(),
		Token: func() (string, error) { reads++; return api.Token, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return k, api, &reads
}

// TestKubernetesStarter: a runner is a Job made suspended, its JIT config a Secret owned by
// the Job (deleted with it) and mounted as a file, then the Job is let run; the config is
// in no other request body; Running lists the listener's unfinished Jobs.
func TestKubernetesStarter(t *testing.T) {
	ctx := context.Background()
	k, api, reads := newKube(t)
	const jit = "eyJqaXQiOiJzM2NyM3QtY29uZmlnIn0="
	e, err := k.Start(ctx, Runner{ID: 107, Name: "Relay_Runner.7"}, jit)
	if err != nil || e.Name != "relay-runner-7" || e.RunnerID != 107 || e.Started.IsZero() {
		t.Fatalf("start: %+v %v", e, err)
	}
	if len(api.Calls) != 3 || api.Calls[0].Method != http.MethodPost || !strings.HasSuffix(api.Calls[0].Path, "/jobs") ||
		!strings.HasSuffix(api.Calls[1].Path, "/secrets") || api.Calls[2].Method != http.MethodPatch || api.Calls[2].ContentType != "application/merge-patch+json" {
		t.Fatalf("calls: %+v", api.Calls)
	}
	var job struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Suspend      bool `json:"suspend"`
			BackoffLimit int  `json:"backoffLimit"`
			TTL          int  `json:"ttlSecondsAfterFinished"`
			Template     struct {
				Spec struct {
					RestartPolicy string `json:"restartPolicy"`
					Volumes       []struct {
						Secret struct {
							SecretName string `json:"secretName"`
						} `json:"secret"`
					} `json:"volumes"`
					Containers []struct {
						Env []struct{ Name, Value string } `json:"env"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	json.Unmarshal(api.Calls[0].Body, &job)
	if !job.Spec.Suspend || job.Spec.BackoffLimit != 0 || job.Spec.TTL != 300 || job.Metadata.Labels["app"] != "relay-runner" || job.Metadata.Labels["relay.dev/listener"] != "relay-listener" ||
		job.Metadata.Labels["relay.dev/runner-id"] != "107" ||
		job.Spec.Template.Spec.RestartPolicy != "Never" || job.Spec.Template.Spec.Volumes[0].Secret.SecretName != "relay-runner-7" {
		t.Fatalf("job: %s", api.Calls[0].Body)
	}
	env := map[string]string{}
	for _, v := range job.Spec.Template.Spec.Containers[0].Env {
		env[v.Name] = v.Value
	}
	if env["RELAY_JIT_CONFIG_FILE"] != "/run/relay/jit/jitconfig" || env["RELAY_RUNNER_NAME"] != "Relay_Runner.7" {
		t.Fatalf("env %v", env)
	}
	sec := api.Secrets["relay-runner-7"]
	refs := sec["metadata"].(map[string]any)["ownerReferences"].([]any)
	if refs[0].(map[string]any)["uid"] != "uid-1" || refs[0].(map[string]any)["kind"] != "Job" {
		t.Fatalf("secret owner: %v", refs)
	}
	if d, _ := base64.StdEncoding.DecodeString(sec["data"].(map[string]any)["jitconfig"].(string)); string(d) != jit {
		t.Fatal("the secret does not hold the JIT config")
	}
	// Secret planting: the config is in the Secret's body only.
	for i, c := range api.Calls {
		if i != 1 && (strings.Contains(string(c.Body), jit) || strings.Contains(string(c.Body), base64.StdEncoding.EncodeToString([]byte(jit)))) {
			t.Errorf("the JIT config is in %s %s", c.Method, c.Path)
		}
	}
	if spec := api.Jobs["relay-runner-7"]["spec"].(map[string]any); spec["suspend"] != false {
		t.Fatalf("the job was not let run: %v", spec["suspend"])
	}

	k.Start(ctx, Runner{ID: 108, Name: "relay-runner-8"}, "other")
	running, err := k.Running(ctx)
	if err != nil || len(running) != 2 {
		t.Fatalf("running: %+v %v", running, err)
	}
	api.Complete("relay-runner-7")
	if running, _ = k.Running(ctx); len(running) != 1 || running[0].Name != "relay-runner-8" || running[0].Runner != "relay-runner-8" || running[0].RunnerID != 108 {
		t.Fatalf("after one completed: %+v", running)
	}
	// Stop deletes the Job, and the Secret it owns with it; stopping again is no error.
	if err := k.Stop(ctx, running[0]); err != nil || api.Jobs["relay-runner-8"] != nil || api.Secrets["relay-runner-8"] != nil {
		t.Fatalf("stop: %v, %v", err, api.Jobs)
	}
	if err := k.Stop(ctx, running[0]); err != nil {
		t.Fatalf("stopping twice: %v", err)
	}
	if *reads != len(api.Calls) {
		t.Fatalf("token read %d times for %d calls: a rotated token would be missed", *reads, len(api.Calls))
	}
}

// TestKubernetesStarterRefusals: RBAC refusals name what to grant; a Secret that cannot be
// made takes its suspended Job with it, so nothing waits for a config that never comes.
func TestKubernetesStarterRefusals(t *testing.T) {
	ctx := context.Background()
	k, api, _ := newKube(t)
	api.Deny["create secrets"] = true
	_, err := k.Start(ctx, Runner{ID: 1, Name: "relay-1"}, "cfg")
	var ke *KubernetesError
	if !errors.As(err, &ke) || ke.Status != 403 || !strings.Contains(err.Error(), "needs create, get, list, patch and delete on jobs") {
		t.Fatalf("%v", err)
	}
	if len(api.Jobs) != 0 {
		t.Fatalf("a job without its secret was left: %v", api.Jobs)
	}
	// An unsuspend that was applied but whose answer was lost: the running Job is kept.
	api.Deny["create secrets"], api.LosePatchAnswers = false, true
	if e, err := k.Start(ctx, Runner{ID: 2, Name: "relay-2"}, "cfg"); err != nil || api.Jobs["relay-2"] == nil {
		t.Fatalf("lost answer: %+v %v, jobs %v", e, err, api.Jobs)
	}
	// One not applied (patch refused) takes its Job and Secret with it.
	api.LosePatchAnswers, api.Deny["patch jobs"] = false, true
	if _, err := k.Start(ctx, Runner{ID: 3, Name: "relay-3"}, "cfg"); err == nil || api.Jobs["relay-3"] != nil || api.Secrets["relay-3"] != nil {
		t.Fatalf("refused patch: %v, jobs %v", err, api.Jobs)
	}
	for _, bad := range []KubernetesOptions{
		{APIServer: api.URL, Namespace: "ci", Listener: "Not_A_Label", Job: []byte(runnerJob), HTTP: api.Client()},
		{APIServer: api.URL, Namespace: "ci", Listener: "l", Job: []byte(`{"spec": {}}`), HTTP: api.Client()},
		{APIServer: api.URL, Namespace: "ci", Listener: "l", Job: []byte(`not json`), HTTP: api.Client()},
	} {
		if _, err := NewKubernetes(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// notifying is a starter that says when each start returned.
type notifying struct {
	Starter
	started chan string
}

func (n notifying) Start(ctx context.Context, r Runner, jit string) (Execution, error) {
	e, err := n.Starter.Start(ctx, r, jit)
	if err == nil {
		n.started <- r.Name
	}
	return e, err
}

// TestListenWithKubernetes: the listener against the fake broker and the fake API server:
// each assigned job becomes a Job whose Secret holds the JIT config the broker made for it.
func TestListenWithKubernetes(t *testing.T) {
	r := newRig(t)
	k, api, _ := newKube(t)
	n := notifying{Starter: k, started: make(chan string, 10)}
	o := r.opts(5)
	o.Starter = n
	stop := r.run(o)
	r.b.QueueJobs(r.ss.ID, 2)
	for i := 0; i < 2; i++ {
		select {
		case <-n.started:
		case <-time.After(10 * time.Second): // a guard against a hang, not synchronisation
			t.Fatalf("only %d of 2 jobs started", i)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(api.Jobs) != 2 || len(api.Secrets) != 2 {
		t.Fatalf("%d jobs, %d secrets", len(api.Jobs), len(api.Secrets))
	}
	for name, sec := range api.Secrets {
		d, _ := base64.StdEncoding.DecodeString(sec["data"].(map[string]any)["jitconfig"].(string))
		if r.b.Runner(string(d)) == 0 {
			t.Errorf("secret %s holds a config the broker never made", name)
		}
	}
}
