package scaleset

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relaydev/relay/internal/backoff"
)

const (
	armAPIVersion   = "2024-03-01"
	vaultAPIVersion = "7.4"
	vaultScope      = "https://vault.azure.net/.default"
	jitContentType  = "application/vnd.relay.jitconfig"
	// The environment an execution gets: where its JIT config is, and what the listener
	// needs to recognise it after a restart. None of it is secret.
	EnvJITConfigSecret = "RELAY_JIT_CONFIG_SECRET"
	EnvJITConfigFile   = "RELAY_JIT_CONFIG_FILE"
	envListener        = "RELAY_LISTENER_NAME"
	envRunnerName      = "RELAY_RUNNER_NAME"
	envRunnerID        = "RELAY_RUNNER_ID"
)

// ContainerAppsOptions configure a starter of Azure Container Apps job executions.
type ContainerAppsOptions struct {
	// Job is the manual-trigger job's resource id:
	// /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.App/jobs/NAME.
	Job string
	// Vault is the Key Vault holding each execution's JIT config until its runner took a
	// job (https://NAME.vault.azure.net): the listener's identity writes and deletes, the
	// job's identity reads. Use a vault for this alone.
	Vault string
	// Token returns an Entra token for the scope (the listener's managed identity).
	Token    func(ctx context.Context, scope string) (string, error)
	Listener string // recorded in each execution's environment, so Running finds its own
	// SecretTTL is the JIT secret's expiry attribute (default 1h): a bound if deletion
	// fails, not a guarantee (Key Vault may still serve an expired secret).
	SecretTTL time.Duration
	Endpoint  string // ARM (default https://management.azure.com; its token's audience too)
	HTTP      *http.Client
	Now       func() time.Time
	Sleep     func(ctx context.Context, d time.Duration) error
}

// ContainerApps is a Starter of Container Apps job executions: one execution per runner,
// started through ARM with the job's own template plus the location of its JIT config.
type ContainerApps struct {
	o ContainerAppsOptions

	mu       sync.Mutex
	template []map[string]any // the job's containers, read once
	swept    bool
}

var (
	jobID         = regexp.MustCompile(`^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.App/jobs/[-\w.()]+$`)
	notSecretName = regexp.MustCompile(`[^0-9A-Za-z-]+`)
)

// NewContainerApps checks o and returns the starter.
func NewContainerApps(o ContainerAppsOptions) (*ContainerApps, error) {
	if !jobID.MatchString(o.Job) {
		return nil, fmt.Errorf("container apps starter: job %q is not a resource id like /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.App/jobs/NAME", o.Job)
	}
	u, err := url.Parse(o.Vault)
	if err != nil || u.Host == "" || u.Path != "" && u.Path != "/" || u.Scheme != "https" && !(u.Scheme == "http" && loopback(u.Hostname())) {
		return nil, fmt.Errorf("container apps starter: key vault %q is not https://NAME.vault.azure.net", o.Vault)
	}
	if o.Token == nil || o.Listener == "" {
		return nil, errors.New("container apps starter: needs a token source (the managed identity) and the listener's name")
	}
	o.Vault = strings.TrimSuffix(o.Vault, "/")
	if o.Endpoint == "" {
		o.Endpoint = "https://management.azure.com"
	}
	o.Endpoint = strings.TrimSuffix(o.Endpoint, "/")
	if o.SecretTTL == 0 {
		o.SecretTTL = time.Hour
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = backoff.Sleep
	}
	return &ContainerApps{o: o}, nil
}

func loopback(host string) bool { return host == "127.0.0.1" || host == "localhost" || host == "::1" }

// secretName is the runner's JIT secret: Key Vault names are letters, digits and dashes.
func secretName(runner string) string {
	n := strings.Trim(notSecretName.ReplaceAllString(runner, "-"), "-")
	return "relay-jit-" + n[:min(len(n), 100)]
}

// Start writes the JIT config to the vault, then starts an execution that is told where it
// is; a start that fails deletes the secret again.
func (c *ContainerApps) Start(ctx context.Context, r Runner, jitConfig string) (Execution, error) {
	containers, err := c.containers(ctx)
	if err != nil {
		return Execution{}, err
	}
	name := secretName(r.Name)
	secretURL := c.o.Vault + "/secrets/" + name
	put := map[string]any{"value": jitConfig, "contentType": jitContentType,
		"attributes": map[string]any{"enabled": true, "exp": c.o.Now().Add(c.o.SecretTTL).Unix()},
		"tags":       map[string]string{"relay-listener": c.o.Listener, "relay-runner": r.Name}}
	if err := c.vault(ctx, http.MethodPut, "/secrets/"+name, put, nil, http.StatusOK); err != nil {
		return Execution{}, err
	}
	env := []map[string]any{{"name": EnvJITConfigSecret, "value": secretURL}, {"name": envRunnerName, "value": r.Name},
		{"name": envRunnerID, "value": strconv.FormatInt(r.ID, 10)}, {"name": envListener, "value": c.o.Listener}}
	first := map[string]any{}
	for k, v := range containers[0] {
		first[k] = v
	}
	old, _ := first["env"].([]any)
	for _, v := range env {
		old = append(old, v)
	}
	first["env"] = old
	body := map[string]any{"containers": append([]map[string]any{first}, containers[1:]...)}
	var out struct {
		Name string `json:"name"`
	}
	resp, err := c.arm(ctx, http.MethodPost, c.o.Job+"/start", body, &out, http.StatusOK, http.StatusAccepted)
	if err == nil && out.Name == "" {
		err = c.await(ctx, resp.Header, &out)
	}
	if err != nil {
		c.release(context.WithoutCancel(ctx), name)
		return Execution{}, err
	}
	return Execution{Name: out.Name, Runner: r.Name, RunnerID: r.ID, Started: c.o.Now()}, nil
}

// await follows a 202's Location until the operation answers with the execution.
func (c *ContainerApps) await(ctx context.Context, h http.Header, out any) error {
	loc := h.Get("Location")
	if !strings.HasPrefix(loc, c.o.Endpoint+"/") {
		return fmt.Errorf("container apps: the start was accepted without a name or a Location on %s to follow", c.o.Endpoint)
	}
	for i := 0; i < 60; i++ {
		wait, _ := strconv.Atoi(h.Get("Retry-After"))
		if err := c.o.Sleep(ctx, time.Duration(max(wait, 1))*time.Second); err != nil {
			return err
		}
		resp, err := c.arm(ctx, http.MethodGet, strings.TrimPrefix(loc, c.o.Endpoint), nil, out, http.StatusOK, http.StatusAccepted)
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		h = resp.Header
	}
	return errors.New("container apps: the start was still running after 60 polls")
}

// containers reads the job's template once: a start's template replaces the job's, so it
// must carry every container with its image and resources.
func (c *ContainerApps) containers(ctx context.Context) ([]map[string]any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.template != nil {
		return c.template, nil
	}
	var job struct {
		Properties struct {
			Configuration struct {
				TriggerType string `json:"triggerType"`
			} `json:"configuration"`
			Template struct {
				Containers []map[string]any `json:"containers"`
			} `json:"template"`
		} `json:"properties"`
	}
	if _, err := c.arm(ctx, http.MethodGet, c.o.Job, nil, &job, http.StatusOK); err != nil {
		return nil, err
	}
	if t := job.Properties.Configuration.TriggerType; !strings.EqualFold(t, "Manual") {
		return nil, fmt.Errorf("container apps: job %s has trigger type %q: the listener starts executions of a Manual job (an Event job is KEDA's to scale)", c.o.Job, t)
	}
	if len(job.Properties.Template.Containers) == 0 {
		return nil, fmt.Errorf("container apps: job %s has no containers", c.o.Job)
	}
	for _, ct := range job.Properties.Template.Containers {
		delete(ct, "probes") // not part of an execution's container
	}
	c.template = job.Properties.Template.Containers
	return c.template, nil
}

// Running lists the job's executions that this listener started and that have not ended.
// The first call also deletes the JIT secrets of executions that ended while no listener
// ran.
func (c *ContainerApps) Running(ctx context.Context) ([]Execution, error) {
	var out []Execution
	next := c.o.Job + "/executions"
	for next != "" {
		var page struct {
			Value []struct {
				Name       string `json:"name"`
				Properties struct {
					Status    string    `json:"status"`
					StartTime time.Time `json:"startTime"`
					Template  struct {
						Containers []struct {
							Env []struct{ Name, Value string } `json:"env"`
						} `json:"containers"`
					} `json:"template"`
				} `json:"properties"`
			} `json:"value"`
			NextLink string `json:"nextLink"`
		}
		if _, err := c.arm(ctx, http.MethodGet, next, nil, &page, http.StatusOK); err != nil {
			return nil, err
		}
		for _, x := range page.Value {
			if s := x.Properties.Status; s != "Running" && s != "Processing" {
				continue
			}
			env := map[string]string{}
			if len(x.Properties.Template.Containers) > 0 {
				for _, v := range x.Properties.Template.Containers[0].Env {
					env[v.Name] = v.Value
				}
			}
			if env[envListener] != c.o.Listener {
				continue
			}
			id, _ := strconv.ParseInt(env[envRunnerID], 10, 64)
			out = append(out, Execution{Name: x.Name, Runner: env[envRunnerName], RunnerID: id, Started: x.Properties.StartTime})
		}
		next = ""
		if page.NextLink != "" {
			if !strings.HasPrefix(page.NextLink, c.o.Endpoint+"/") {
				return nil, fmt.Errorf("container apps: a nextLink off %s: %s", c.o.Endpoint, page.NextLink)
			}
			next = strings.TrimPrefix(page.NextLink, c.o.Endpoint)
		}
	}
	c.mu.Lock()
	sweep := !c.swept
	c.swept = true
	c.mu.Unlock()
	if sweep {
		if err := c.sweep(ctx, out); err != nil {
			c.mu.Lock()
			c.swept = false
			c.mu.Unlock()
			return nil, err
		}
	}
	return out, nil
}

// sweep deletes this listener's JIT secrets whose execution is not running.
func (c *ContainerApps) sweep(ctx context.Context, running []Execution) error {
	keep := map[string]bool{}
	for _, e := range running {
		keep[secretName(e.Runner)] = true
	}
	next := "/secrets?maxresults=25"
	for next != "" {
		var page struct {
			Value []struct {
				ID   string            `json:"id"`
				Tags map[string]string `json:"tags"`
			} `json:"value"`
			NextLink string `json:"nextLink"`
		}
		if err := c.vault(ctx, http.MethodGet, next, nil, &page, http.StatusOK); err != nil {
			return err
		}
		for _, s := range page.Value {
			name := s.ID[strings.LastIndex(s.ID, "/")+1:]
			if s.Tags["relay-listener"] == c.o.Listener && !keep[name] {
				if err := c.release(ctx, name); err != nil {
					return err
				}
			}
		}
		next = ""
		if page.NextLink != "" {
			if !strings.HasPrefix(page.NextLink, c.o.Vault+"/") {
				return fmt.Errorf("key vault: a nextLink off %s: %s", c.o.Vault, page.NextLink)
			}
			next = strings.TrimPrefix(page.NextLink, c.o.Vault)
		}
	}
	return nil
}

// Stop stops an execution; one that is gone or ended is no error.
func (c *ContainerApps) Stop(ctx context.Context, e Execution) error {
	_, err := c.arm(ctx, http.MethodPost, c.o.Job+"/executions/"+url.PathEscape(e.Name)+"/stop", nil, nil, http.StatusOK, http.StatusAccepted, http.StatusNoContent, http.StatusNotFound)
	return err
}

// Release deletes the execution's JIT secret, and purges it where the vault allows.
func (c *ContainerApps) Release(ctx context.Context, e Execution) error {
	return c.release(ctx, secretName(e.Runner))
}

func (c *ContainerApps) release(ctx context.Context, name string) error {
	if err := c.vault(ctx, http.MethodDelete, "/secrets/"+name, nil, nil, http.StatusOK, http.StatusNotFound); err != nil {
		return err
	}
	// Purging right after deleting may be refused (still being deleted, purge protection,
	// no purge right): the deleted secret is then readable only with the vault's recover
	// rights, never the job's identity, and goes when the retention ends.
	_ = c.vault(ctx, http.MethodDelete, "/deletedsecrets/"+name, nil, nil, http.StatusNoContent, http.StatusOK, http.StatusNotFound)
	return nil
}

// AzureError is a refusal of ARM or Key Vault; a 403 names the permission missing.
type AzureError struct {
	Service, Method, Path string
	Status                int
	Code, Message         string
}

func (e *AzureError) Error() string {
	msg := fmt.Sprintf("%s: %s %s: %d %s %s", e.Service, e.Method, e.Path, e.Status, e.Code, e.Message)
	if e.Status == http.StatusForbidden || e.Status == http.StatusUnauthorized {
		if e.Service == "key vault" {
			msg += " (fix: the listener's identity needs the Key Vault Secrets Officer role on the vault: set, list, delete, purge secrets; docs/runner.md)"
		} else {
			msg += " (fix: the listener's identity needs Microsoft.App/jobs/read, Microsoft.App/jobs/start/action, Microsoft.App/jobs/executions/read and Microsoft.App/jobs/stop/action on the job: docs/runner.md)"
		}
	}
	return msg
}

func (c *ContainerApps) arm(ctx context.Context, method, path string, in, out any, want ...int) (*http.Response, error) {
	return c.do(ctx, "container apps", c.o.Endpoint+"/.default", method, withAPIVersion(c.o.Endpoint+path, armAPIVersion), in, out, want...)
}

func (c *ContainerApps) vault(ctx context.Context, method, path string, in, out any, want ...int) error {
	_, err := c.do(ctx, "key vault", vaultScope, method, withAPIVersion(c.o.Vault+path, vaultAPIVersion), in, out, want...)
	return err
}

// withAPIVersion adds api-version=v to u unless it names one (a nextLink or Location does).
func withAPIVersion(u, v string) string {
	switch {
	case strings.Contains(u, "api-version="):
		return u
	case strings.Contains(u, "?"):
		return u + "&api-version=" + v
	}
	return u + "?api-version=" + v
}

func (c *ContainerApps) do(ctx context.Context, service, scope, method, u string, in, out any, want ...int) (*http.Response, error) {
	tok, err := c.o.Token(ctx, scope)
	if err != nil {
		return nil, fmt.Errorf("%s: a token from the managed identity: %w", service, err)
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.o.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	for _, w := range want {
		if resp.StatusCode == w {
			if out != nil && len(bytes.TrimSpace(b)) > 0 && resp.StatusCode < 300 {
				if err := json.Unmarshal(b, out); err != nil {
					return nil, fmt.Errorf("%s: %s: %w", service, method, err)
				}
			}
			return resp, nil
		}
	}
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	json.Unmarshal(b, &e)
	pu, _ := url.Parse(u)
	return nil, &AzureError{Service: service, Method: method, Path: pu.Path, Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
}

// containerAppsNeeds are the ARM actions the starter uses on the job.
var containerAppsNeeds = []string{"Microsoft.App/jobs/read", "Microsoft.App/jobs/start/action", "Microsoft.App/jobs/executions/read", "Microsoft.App/jobs/stop/action"}

// Missing asks ARM's permissions API which of the actions the starter needs on the job the
// listener's identity lacks, and lists the vault's secrets (what the sweep does) to see it
// may use the vault.
func (c *ContainerApps) Missing(ctx context.Context) ([]string, error) {
	var perms struct {
		Value []struct {
			Actions    []string `json:"actions"`
			NotActions []string `json:"notActions"`
		} `json:"value"`
	}
	if _, err := c.arm(ctx, http.MethodGet, c.o.Job+"/providers/Microsoft.Authorization/permissions?api-version=2022-04-01", nil, &perms, http.StatusOK); err != nil {
		return nil, err
	}
	var missing []string
	for _, need := range containerAppsNeeds {
		granted := false
		for _, p := range perms.Value {
			granted = granted || matchesAction(p.Actions, need) && !matchesAction(p.NotActions, need)
		}
		if !granted {
			missing = append(missing, need)
		}
	}
	err := c.vault(ctx, http.MethodGet, "/secrets?maxresults=1", nil, nil, http.StatusOK)
	var ae *AzureError
	if errors.As(err, &ae) && (ae.Status == http.StatusForbidden || ae.Status == http.StatusUnauthorized) {
		missing = append(missing, "Key Vault Secrets Officer on "+c.o.Vault)
	} else if err != nil {
		return nil, err
	}
	return missing, nil
}

// matchesAction says whether one of the patterns (ARM's, with * wildcards) grants action.
func matchesAction(patterns []string, action string) bool {
	for _, p := range patterns {
		p, a := strings.ToLower(p), strings.ToLower(action)
		if p == a || p == "*" || strings.HasSuffix(p, "*") && strings.HasPrefix(a, strings.TrimSuffix(p, "*")) {
			return true
		}
	}
	return false
}
