package scaleset

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// In-cluster defaults: the API server and the pod's service-account credentials.
const (
	inClusterAPI      = "https://kubernetes.default.svc"
	serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	listenerLabel     = "relay.dev/listener"
	runnerLabel       = "relay.dev/runner"
	runnerIDLabel     = "relay.dev/runner-id"
	jitKey            = "jitconfig"
	jitMountPath      = "/run/relay/jit"
	defaultTTLSeconds = 300
)

// KubernetesOptions configure a starter of Kubernetes Jobs, through the API server's REST
// API (no client-go): each runner is a Job, and its JIT config a Secret the Job owns (so
// they are deleted together), mounted as a file only the runner's pod reads.
type KubernetesOptions struct {
	APIServer string // default https://kubernetes.default.svc
	Namespace string // default: the pod's own (the service account's namespace file)
	// Token returns the bearer token; default: the service account token, re-read each call
	// (projected tokens rotate).
	Token func() (string, error)
	// CAFile verifies the API server; default the service account's ca.crt.
	CAFile string
	// Listener names the listener: its Jobs carry it as a label, so Running finds them.
	Listener string
	// Job is the runner's Job manifest (batch/v1), as a template: relay sets its name,
	// labels, suspend, ttlSecondsAfterFinished (default 300), backoffLimit 0, and mounts the
	// JIT config into the first container at /run/relay/jit/jitconfig
	// (RELAY_JIT_CONFIG_FILE).
	Job  []byte
	HTTP *http.Client
}

// Kubernetes is a Starter of Kubernetes Jobs.
type Kubernetes struct {
	o   KubernetesOptions
	job map[string]any
}

// NewKubernetes checks o and returns the starter.
func NewKubernetes(o KubernetesOptions) (*Kubernetes, error) {
	if o.APIServer == "" {
		o.APIServer = inClusterAPI
	}
	o.APIServer = strings.TrimSuffix(o.APIServer, "/")
	if o.Namespace == "" {
		b, err := os.ReadFile(serviceAccountDir + "/namespace")
		if err != nil {
			return nil, fmt.Errorf("kubernetes starter: no namespace given and none in %s: %w", serviceAccountDir, err)
		}
		o.Namespace = strings.TrimSpace(string(b))
	}
	if o.Token == nil {
		o.Token = func() (string, error) {
			b, err := os.ReadFile(serviceAccountDir + "/token")
			return strings.TrimSpace(string(b)), err
		}
	}
	if o.HTTP == nil {
		ca := o.CAFile
		if ca == "" {
			ca = serviceAccountDir + "/ca.crt"
		}
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("kubernetes starter: the API server's CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kubernetes starter: %s holds no certificate", ca)
		}
		o.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	if !k8sName.MatchString(o.Listener) {
		return nil, fmt.Errorf("kubernetes starter: listener name %q is not a Kubernetes label value (lower-case letters, digits, -, up to 63)", o.Listener)
	}
	var job map[string]any
	if err := json.Unmarshal(o.Job, &job); err != nil {
		return nil, fmt.Errorf("kubernetes starter: the Job template is not a JSON object: %w", err)
	}
	if containers(job) == nil {
		return nil, errors.New("kubernetes starter: the Job template has no spec.template.spec.containers")
	}
	return &Kubernetes{o: o, job: job}, nil
}

var (
	k8sName    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	notK8sName = regexp.MustCompile(`[^a-z0-9-]+`)
)

func containers(job map[string]any) []any {
	spec, _ := job["spec"].(map[string]any)
	tmpl, _ := spec["template"].(map[string]any)
	pod, _ := tmpl["spec"].(map[string]any)
	c, _ := pod["containers"].([]any)
	if len(c) == 0 {
		return nil
	}
	return c
}

// Start creates the runner's Job suspended, then the Secret holding its JIT config owned
// by the Job, then lets the Job run: its pod never starts before its config exists.
func (k *Kubernetes) Start(ctx context.Context, r Runner, jitConfig string) (Execution, error) {
	runner := r.Name
	name := jobName(runner)
	job := k.jobFor(name, r)
	var made struct {
		Metadata struct {
			Name    string    `json:"name"`
			UID     string    `json:"uid"`
			Created time.Time `json:"creationTimestamp"`
		} `json:"metadata"`
	}
	if err := k.do(ctx, http.MethodPost, k.ns("/apis/batch/v1", "jobs"), "application/json", job, &made, http.StatusCreated); err != nil {
		return Execution{}, err
	}
	secret := map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
		"metadata": map[string]any{"name": name, "labels": map[string]string{listenerLabel: k.o.Listener, runnerLabel: name},
			"ownerReferences": []any{map[string]any{"apiVersion": "batch/v1", "kind": "Job", "name": made.Metadata.Name, "uid": made.Metadata.UID, "blockOwnerDeletion": true}}},
		"data": map[string]string{jitKey: base64.StdEncoding.EncodeToString([]byte(jitConfig))},
	}
	if err := k.do(ctx, http.MethodPost, k.ns("/api/v1", "secrets"), "application/json", secret, nil, http.StatusCreated); err != nil {
		k.deleteJob(ctx, name)
		return Execution{}, err
	}
	patch := map[string]any{"spec": map[string]any{"suspend": false}}
	if err := k.do(ctx, http.MethodPatch, k.ns("/apis/batch/v1", "jobs/"+name), "application/merge-patch+json", patch, nil, http.StatusOK); err != nil {
		// The patch may have been applied with its answer lost: a Job that runs is kept.
		if !k.unsuspended(ctx, name) {
			k.deleteJob(ctx, name)
			return Execution{}, err
		}
	}
	return Execution{Name: name, Runner: runner, RunnerID: r.ID, Started: made.Metadata.Created}, nil
}

// unsuspended says whether the Job is let run.
func (k *Kubernetes) unsuspended(ctx context.Context, name string) bool {
	var job struct {
		Spec struct {
			Suspend *bool `json:"suspend"`
		} `json:"spec"`
	}
	err := k.do(context.WithoutCancel(ctx), http.MethodGet, k.ns("/apis/batch/v1", "jobs/"+name), "", nil, &job, http.StatusOK)
	return err == nil && job.Spec.Suspend != nil && !*job.Spec.Suspend
}

// Stop deletes the runner's Job; its pod and Secret go with it.
func (k *Kubernetes) Stop(ctx context.Context, e Execution) error {
	q := url.Values{"propagationPolicy": {"Background"}}
	return k.do(ctx, http.MethodDelete, k.ns("/apis/batch/v1", "jobs/"+e.Name)+"?"+q.Encode(), "", nil, nil, http.StatusOK, http.StatusAccepted, http.StatusNotFound)
}

// Running lists the listener's Jobs that have not finished.
func (k *Kubernetes) Running(ctx context.Context) ([]Execution, error) {
	var list struct {
		Items []struct {
			Metadata struct {
				Name    string            `json:"name"`
				Labels  map[string]string `json:"labels"`
				Created time.Time         `json:"creationTimestamp"`
			} `json:"metadata"`
			Status struct {
				Conditions []struct {
					Type   string `json:"type"`
					Status string `json:"status"`
				} `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	q := url.Values{"labelSelector": {listenerLabel + "=" + k.o.Listener}}
	if err := k.do(ctx, http.MethodGet, k.ns("/apis/batch/v1", "jobs")+"?"+q.Encode(), "", nil, &list, http.StatusOK); err != nil {
		return nil, err
	}
	var out []Execution
	for _, j := range list.Items {
		done := false
		for _, c := range j.Status.Conditions {
			done = done || (c.Type == "Complete" || c.Type == "Failed") && c.Status == "True"
		}
		if !done {
			id, _ := strconv.ParseInt(j.Metadata.Labels[runnerIDLabel], 10, 64)
			out = append(out, Execution{Name: j.Metadata.Name, Runner: j.Metadata.Labels[runnerLabel], RunnerID: id, Started: j.Metadata.Created})
		}
	}
	return out, nil
}

// jobFor is the template with this runner's name, labels, and JIT config volume.
func (k *Kubernetes) jobFor(name string, r Runner) map[string]any {
	runner, id := r.Name, strconv.FormatInt(r.ID, 10)
	var job map[string]any
	b, _ := json.Marshal(k.job) // a deep copy
	json.Unmarshal(b, &job)
	job["apiVersion"], job["kind"] = "batch/v1", "Job"
	meta := k.label(job, name, id)
	meta["name"] = name
	delete(meta, "generateName")
	spec := job["spec"].(map[string]any)
	spec["suspend"], spec["backoffLimit"] = true, 0
	if _, ok := spec["ttlSecondsAfterFinished"]; !ok {
		spec["ttlSecondsAfterFinished"] = defaultTTLSeconds
	}
	tmpl := spec["template"].(map[string]any)
	k.label(tmpl, name, id)
	pod := tmpl["spec"].(map[string]any)
	if _, ok := pod["restartPolicy"]; !ok {
		pod["restartPolicy"] = "Never"
	}
	vols, _ := pod["volumes"].([]any)
	pod["volumes"] = append(vols, map[string]any{"name": "relay-jit", "secret": map[string]any{"secretName": name, "defaultMode": 0o440}})
	c := containers(job)[0].(map[string]any)
	mounts, _ := c["volumeMounts"].([]any)
	c["volumeMounts"] = append(mounts, map[string]any{"name": "relay-jit", "mountPath": jitMountPath, "readOnly": true})
	env, _ := c["env"].([]any)
	c["env"] = append(env, map[string]any{"name": EnvJITConfigFile, "value": jitMountPath + "/" + jitKey},
		map[string]any{"name": envRunnerName, "value": runner})
	return job
}

// label puts the listener's and the runner's labels on obj's metadata, made if missing,
// and returns that metadata.
func (k *Kubernetes) label(obj map[string]any, name, id string) map[string]any {
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	labels, _ := meta["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
	}
	labels[listenerLabel], labels[runnerLabel], labels[runnerIDLabel] = k.o.Listener, name, id
	meta["labels"], obj["metadata"] = labels, meta
	return meta
}

// jobName is the runner's name as a Kubernetes object name.
func jobName(runner string) string {
	n := strings.Trim(notK8sName.ReplaceAllString(strings.ToLower(runner), "-"), "-")
	if len(n) > 63 {
		n = strings.TrimRight(n[:63], "-")
	}
	return n
}

func (k *Kubernetes) deleteJob(ctx context.Context, name string) {
	_ = k.Stop(context.WithoutCancel(ctx), Execution{Name: name})
}

func (k *Kubernetes) ns(group, resource string) string {
	return fmt.Sprintf("%s%s/namespaces/%s/%s", k.o.APIServer, group, k.o.Namespace, resource)
}

// KubernetesError is an API server refusal; a 403 names the RBAC rule missing.
type KubernetesError struct {
	Method, Resource string
	Status           int
	Message          string
}

func (e *KubernetesError) Error() string {
	msg := fmt.Sprintf("kubernetes: %s %s: %d %s", e.Method, e.Resource, e.Status, e.Message)
	if e.Status == http.StatusForbidden {
		msg += " (fix: the listener's service account needs create, get, list, patch and delete on jobs (batch) and create on secrets in its namespace: docs/runner.md, relay listener, Permissions)"
	}
	return msg
}

func (k *Kubernetes) do(ctx context.Context, method, u, ctype string, in, out any, want ...int) error {
	tok, err := k.o.Token()
	if err != nil {
		return fmt.Errorf("kubernetes: the service account token: %w", err)
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := k.o.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	for _, w := range want {
		if resp.StatusCode == w {
			if out != nil {
				return json.Unmarshal(b, out)
			}
			return nil
		}
	}
	var st struct {
		Message string `json:"message"`
	}
	json.Unmarshal(b, &st)
	res := strings.TrimPrefix(strings.SplitN(u, "?", 2)[0], k.o.APIServer)
	return &KubernetesError{Method: method, Resource: res, Status: resp.StatusCode, Message: st.Message}
}

// kubernetesNeeds are the RBAC rules the starter uses, as verb and resource (group).
var kubernetesNeeds = []struct{ verb, group, resource string }{
	{"create", "batch", "jobs"}, {"get", "batch", "jobs"}, {"list", "batch", "jobs"}, {"patch", "batch", "jobs"}, {"delete", "batch", "jobs"}, {"create", "", "secrets"},
}

// Missing asks the API server (SelfSubjectAccessReview) which of the rules the starter
// needs its service account lacks, as "verb resource".
func (k *Kubernetes) Missing(ctx context.Context) ([]string, error) {
	var missing []string
	for _, n := range kubernetesNeeds {
		review := map[string]any{"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
			"spec": map[string]any{"resourceAttributes": map[string]string{"namespace": k.o.Namespace, "verb": n.verb, "group": n.group, "resource": n.resource}}}
		var out struct {
			Status struct {
				Allowed bool `json:"allowed"`
			} `json:"status"`
		}
		if err := k.do(ctx, http.MethodPost, k.o.APIServer+"/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json", review, &out, http.StatusCreated, http.StatusOK); err != nil {
			return nil, err
		}
		if !out.Status.Allowed {
			missing = append(missing, n.verb+" "+n.resource)
		}
	}
	return missing, nil
}
