package testutil

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Azure is a fake of the two Azure services the listener's Container Apps starter uses,
// on one TLS server on 127.0.0.1: ARM's Microsoft.App jobs (get, start as a long-running
// operation answered 202 + Location, executions listed in pages with nextLink, stop) and
// Key Vault secrets (set with tags and attributes, get, list in pages, delete into the
// soft-deleted state, purge). It records every call with its body. Tokens are per
// audience: ARMToken for ARM, VaultToken for the listener's Key Vault rights (all),
// ReaderToken for the job identity's (get only).
type Azure struct {
	*httptest.Server
	ARMToken, VaultToken, ReaderToken string
	Now                               func() time.Time
	// CertFile is the TLS certificate (SSL_CERT_FILE for a relay subprocess); Identity the
	// App Service / Container Apps managed identity endpoint (IDENTITY_ENDPOINT). Its
	// IDENTITY_HEADER chooses whose tokens it hands out: ListenerEnv's the listener's,
	// JobEnv's the job's (Key Vault read only).
	CertFile, Identity string

	mu         sync.Mutex
	Calls      []KubeCall
	jobs       map[string]*azureJob
	executions map[string]*azureExecution // by name
	order      []string
	ops        map[string]string // operation path -> execution name
	secrets    map[string]azureSecret
	deleted    map[string]azureSecret
	Deny       map[string]bool // ARM actions under Microsoft.App/jobs/ ("start/action", "stop/action", "executions/read"), "set secret", "list secrets"
	n          int
}

type azureJob struct {
	trigger    string
	containers []map[string]any
}

type azureExecution struct {
	job, status string
	started     time.Time
	template    map[string]any
}

type azureSecret struct {
	Value       string            `json:"value"`
	ContentType string            `json:"contentType"`
	Tags        map[string]string `json:"tags"`
	Attributes  map[string]any    `json:"attributes"`
}

// StartAzure starts the fake.
func StartAzure(t testing.TB) *Azure {
	a := &Azure{ARMToken: "arm-token-1", VaultToken: "kv-listener-1", ReaderToken: "kv-job-1", Now: time.Now,
		jobs: map[string]*azureJob{}, executions: map[string]*azureExecution{}, ops: map[string]string{},
		secrets: map[string]azureSecret{}, deleted: map[string]azureSecret{}, Deny: map[string]bool{}}
	a.Server = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	a.CertFile = t.TempDir() + "/azure.pem"
	if err := writeFile(a.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Certificate().Raw})); err != nil {
		t.Fatal(err)
	}
	id := httptest.NewServer(http.HandlerFunc(a.identity))
	t.Cleanup(id.Close)
	a.Identity = id.URL
	return a
}

// ListenerEnv and JobEnv are the environment of a relay subprocess running as the listener
// or as a job execution: the certificate to trust and the managed identity.
func (a *Azure) ListenerEnv() []string {
	return []string{"SSL_CERT_FILE=" + a.CertFile, "IDENTITY_ENDPOINT=" + a.Identity, "IDENTITY_HEADER=listener-identity"}
}

func (a *Azure) JobEnv() []string {
	return []string{"SSL_CERT_FILE=" + a.CertFile, "IDENTITY_ENDPOINT=" + a.Identity, "IDENTITY_HEADER=job-identity"}
}

func (a *Azure) identity(w http.ResponseWriter, r *http.Request) {
	res := r.URL.Query().Get("resource")
	who := r.Header.Get("X-IDENTITY-HEADER")
	if res == "" || who != "listener-identity" && who != "job-identity" {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	tok := a.ARMToken
	switch {
	case strings.HasPrefix(res, "https://vault.azure.net") && who == "job-identity":
		tok = a.ReaderToken
	case strings.HasPrefix(res, "https://vault.azure.net"):
		tok = a.VaultToken
	case who == "job-identity":
		tok = "job-has-no-arm-rights"
	}
	writeJSON(w, http.StatusOK, map[string]string{"access_token": tok, "token_type": "Bearer",
		"expires_on": fmt.Sprint(time.Now().Add(time.Hour).Unix()), "resource": res})
}

// AddJob makes a Container Apps job with that trigger type and containers.
func (a *Azure) AddJob(id, trigger string, containers ...map[string]any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.jobs[id] = &azureJob{trigger: trigger, containers: containers}
}

// Token is what the listener's managed identity would get for scope.
func (a *Azure) Token(_ context.Context, scope string) (string, error) {
	if strings.HasPrefix(scope, "https://vault.azure.net") {
		return a.VaultToken, nil
	}
	return a.ARMToken, nil
}

// Executions are the executions' names, in start order, and their status.
func (a *Azure) Executions() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]string{}
	for n, e := range a.executions {
		out[n] = e.status
	}
	return out
}

// Env is the first container's environment of an execution, as ARM would show it.
func (a *Azure) Env(execution string) map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]string{}
	e := a.executions[execution]
	if e == nil {
		return out
	}
	cs, _ := e.template["containers"].([]any)
	if len(cs) == 0 {
		return out
	}
	env, _ := cs[0].(map[string]any)["env"].([]any)
	for _, v := range env {
		m := v.(map[string]any)
		out[fmt.Sprint(m["name"])] = fmt.Sprint(m["value"])
	}
	return out
}

// Finish ends an execution with status (Succeeded, Failed).
func (a *Azure) Finish(execution, status string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.executions[execution]; e != nil && e.status == "Running" {
		e.status = status
		return true
	}
	return false
}

// Secret is a live secret's value ("" when there is none); Deleted counts soft-deleted ones.
func (a *Azure) Secret(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.secrets[name].Value
}

func (a *Azure) Secrets() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for n := range a.secrets {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (a *Azure) Deleted() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.deleted)
}

// CallLog returns the calls so far.
func (a *Azure) CallLog() []KubeCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]KubeCall(nil), a.Calls...)
}

func azureErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (a *Azure) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.Calls = append(a.Calls, KubeCall{Method: r.Method, Path: r.URL.RequestURI(), ContentType: r.Header.Get("Content-Type"), Body: body})
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if strings.HasPrefix(r.URL.Path, "/secrets") || strings.HasPrefix(r.URL.Path, "/deletedsecrets") {
		if r.URL.Query().Get("api-version") != "7.4" {
			azureErr(w, 400, "BadParameter", "api-version missing or unsupported")
			return
		}
		a.vault(w, r, tok, body)
		return
	}
	if tok != a.ARMToken {
		azureErr(w, 401, "InvalidAuthenticationToken", "The access token is invalid.")
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		azureErr(w, 400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
		return
	}
	path := r.URL.Path
	if strings.HasSuffix(path, "/providers/Microsoft.Authorization/permissions") {
		// What the Deny map refuses is a notAction of a role granting Microsoft.App/jobs/*.
		var not []string
		for d, on := range a.Deny {
			if on && strings.Contains(d, "/") || on && d == "read" {
				not = append(not, "Microsoft.App/jobs/"+d)
			}
		}
		writeJSON(w, 200, map[string]any{"value": []any{map[string]any{"actions": []string{"Microsoft.App/jobs/*"}, "notActions": not}}})
		return
	}
	if name, ok := a.ops[path]; ok { // a long-running start's Location
		writeJSON(w, 200, map[string]any{"id": path, "name": name})
		return
	}
	var job *azureJob
	var id, rest string
	for jid, j := range a.jobs {
		if path == jid || strings.HasPrefix(path, jid+"/") {
			job, id, rest = j, jid, strings.TrimPrefix(path, jid)
		}
	}
	if job == nil {
		azureErr(w, 404, "ResourceNotFound", "The Resource 'Microsoft.App/jobs' under the resource group was not found.")
		return
	}
	deny := func(action string) bool {
		if !a.Deny[action] {
			return false
		}
		azureErr(w, 403, "AuthorizationFailed", fmt.Sprintf("The client does not have authorization to perform action 'Microsoft.App/jobs/%s' over scope '%s'.", action, id))
		return true
	}
	switch {
	case rest == "" && r.Method == http.MethodGet:
		cs := make([]any, len(job.containers))
		for i, c := range job.containers {
			cs[i] = c
		}
		writeJSON(w, 200, map[string]any{"id": id, "properties": map[string]any{"configuration": map[string]any{"triggerType": job.trigger},
			"template": map[string]any{"containers": cs}}})
	case rest == "/start" && r.Method == http.MethodPost:
		if deny("start/action") {
			return
		}
		var tmpl map[string]any
		if err := json.Unmarshal(body, &tmpl); err != nil {
			azureErr(w, 400, "InvalidRequestContent", err.Error())
			return
		}
		if cs, _ := tmpl["containers"].([]any); len(cs) == 0 || cs[0].(map[string]any)["image"] == nil {
			azureErr(w, 400, "ContainerAppInvalidJobExecutionTemplate", "a start template needs every container with its image")
			return
		}
		a.n++
		name := fmt.Sprintf("%s-%07x", id[strings.LastIndex(id, "/")+1:], a.n)
		a.executions[name] = &azureExecution{job: id, status: "Running", started: a.Now().UTC(), template: tmpl}
		a.order = append(a.order, name)
		op := fmt.Sprintf("/subscriptions/x/providers/Microsoft.App/locations/westeurope/containerappsjobOperationResults/op-%d", a.n)
		a.ops[op] = name
		w.Header().Set("Location", a.URL+op+"?api-version=2024-03-01")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusAccepted)
	case rest == "/executions" && r.Method == http.MethodGet:
		if deny("executions/read") {
			return
		}
		skip := 0
		fmt.Sscan(r.URL.Query().Get("$skiptoken"), &skip)
		var page []any
		for i, name := range a.order {
			e := a.executions[name]
			if i < skip || e.job != id {
				continue
			}
			if len(page) == 10 {
				writeJSON(w, 200, map[string]any{"value": page, "nextLink": fmt.Sprintf("%s%s/executions?api-version=2024-03-01&$skiptoken=%d", a.URL, id, i)})
				return
			}
			page = append(page, map[string]any{"name": name, "id": id + "/executions/" + name,
				"properties": map[string]any{"status": e.status, "startTime": e.started.Format(time.RFC3339), "template": e.template}})
		}
		writeJSON(w, 200, map[string]any{"value": page})
	case strings.HasPrefix(rest, "/executions/") && strings.HasSuffix(rest, "/stop") && r.Method == http.MethodPost:
		if deny("stop/action") {
			return
		}
		e := a.executions[strings.TrimSuffix(strings.TrimPrefix(rest, "/executions/"), "/stop")]
		if e == nil {
			azureErr(w, 404, "ResourceNotFound", "no such execution")
			return
		}
		if e.status == "Running" {
			e.status = "Stopped"
		}
		writeJSON(w, 200, map[string]any{})
	default:
		azureErr(w, 404, "NoRegisteredProviderFound", "no such operation "+r.Method+" "+path)
	}
}

func (a *Azure) vault(w http.ResponseWriter, r *http.Request, tok string, body []byte) {
	if tok != a.VaultToken && tok != a.ReaderToken {
		azureErr(w, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	reader := tok == a.ReaderToken
	forbid := func(op string) {
		azureErr(w, 403, "Forbidden", fmt.Sprintf("Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/%s'", op))
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case parts[0] == "secrets" && len(parts) == 1 && r.Method == http.MethodGet:
		if reader || a.Deny["list secrets"] {
			forbid("secrets/readMetadata/action")
			return
		}
		var names []string
		for n := range a.secrets {
			names = append(names, n)
		}
		sort.Strings(names)
		skip := 0
		fmt.Sscan(r.URL.Query().Get("$skiptoken"), &skip)
		var page []any
		for i, n := range names[min(skip, len(names)):] {
			if i == 25 {
				writeJSON(w, 200, map[string]any{"value": page, "nextLink": fmt.Sprintf("%s/secrets?api-version=7.4&maxresults=25&$skiptoken=%d", a.URL, skip+i)})
				return
			}
			s := a.secrets[n]
			page = append(page, map[string]any{"id": a.URL + "/secrets/" + n, "tags": s.Tags, "attributes": s.Attributes, "contentType": s.ContentType})
		}
		writeJSON(w, 200, map[string]any{"value": page})
	case parts[0] == "secrets" && len(parts) == 2 && r.Method == http.MethodPut:
		if reader || a.Deny["set secret"] {
			forbid("secrets/setSecret/action")
			return
		}
		var s azureSecret
		if err := json.Unmarshal(body, &s); err != nil || s.Value == "" {
			azureErr(w, 400, "BadParameter", "value is required")
			return
		}
		a.secrets[parts[1]] = s
		writeJSON(w, 200, map[string]any{"id": a.URL + "/secrets/" + parts[1] + "/v1", "attributes": s.Attributes, "tags": s.Tags})
	case parts[0] == "secrets" && len(parts) >= 2 && r.Method == http.MethodGet:
		s, ok := a.secrets[parts[1]]
		if !ok {
			azureErr(w, 404, "SecretNotFound", "A secret with (name/id) "+parts[1]+" was not found in this key vault.")
			return
		}
		writeJSON(w, 200, map[string]any{"value": s.Value, "id": a.URL + "/secrets/" + parts[1] + "/v1", "contentType": s.ContentType})
	case parts[0] == "secrets" && len(parts) == 2 && r.Method == http.MethodDelete:
		if reader {
			forbid("secrets/delete")
			return
		}
		s, ok := a.secrets[parts[1]]
		if !ok {
			azureErr(w, 404, "SecretNotFound", "A secret with (name/id) "+parts[1]+" was not found in this key vault.")
			return
		}
		delete(a.secrets, parts[1])
		a.deleted[parts[1]] = s
		writeJSON(w, 200, map[string]any{"id": a.URL + "/secrets/" + parts[1], "recoveryId": a.URL + "/deletedsecrets/" + parts[1]})
	case parts[0] == "deletedsecrets" && len(parts) == 2 && r.Method == http.MethodDelete:
		if reader {
			forbid("deletedsecrets/delete")
			return
		}
		if _, ok := a.deleted[parts[1]]; !ok {
			azureErr(w, 404, "SecretNotFound", "Deleted Secret not found")
			return
		}
		delete(a.deleted, parts[1])
		w.WriteHeader(http.StatusNoContent)
	default:
		azureErr(w, 404, "NotFound", "no such operation")
	}
}
