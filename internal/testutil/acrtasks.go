package testutil

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// ACRBuildFunc really builds a run's context (unpacked in dir) for platform and pushes it
// as repository:tag, returning the pushed manifest digest and the build's log.
type ACRBuildFunc func(ctx context.Context, dir, platform, repository, tag string) (digest, log string, err error)

// ACRTasks is ACR Tasks' ARM API for quick runs (listBuildSourceUploadUrl, scheduleRun,
// runs/{id}, runs/{id}/listLogSasUrl, runs/{id}/cancel), the blob endpoints behind its SAS
// links (source upload, run log with Range reads), and bearer-token checks. A run moves
// Queued -> Running -> (built by Build) Succeeded or Failed, one state per GET.
type ACRTasks struct {
	onRequest func(*http.Request)
	URL       string
	Build     ACRBuildFunc
	// Faults: answer the next Throttle ARM calls 429 (Retry-After: 0); reject the next
	// Expired calls 401; Fail makes runs fail (Step ... error in the log); Hang keeps runs
	// Running until cancelled; TimeoutRun ends runs with status Timeout.
	Throttle, Expired int
	Fail, Hang        bool
	TimeoutRun        bool
	// Actions are what ARM's permissions API says the identity may do on the registry.
	Actions []string

	mu       sync.Mutex
	tokens   map[string]bool
	uploads  map[string][]byte
	runs     map[string]*acrFakeRun
	requests []map[string]any
	calls    []string
	dir      string
}

type acrFakeRun struct {
	id, status, source, platform, image string
	polls                               int
	log                                 bytes.Buffer
	digest                              string
}

// StartACRTasks serves the fake; Credential() gives tokens it accepts.
func StartACRTasks(t testing.TB, build ACRBuildFunc) *ACRTasks {
	t.Helper()
	a := &ACRTasks{Build: build, Actions: []string{"Microsoft.ContainerRegistry/*"}, tokens: map[string]bool{}, uploads: map[string][]byte{}, runs: map[string]*acrFakeRun{}, dir: t.TempDir()}
	srv := httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(srv.Close)
	a.URL = srv.URL
	return a
}

// Credential is an azcore.TokenCredential whose tokens the fake accepts (a new one per
// call, as a refreshed managed identity token would be).
func (a *ACRTasks) Credential() azcore.TokenCredential { return acrCred{a} }

type acrCred struct{ a *ACRTasks }

func (c acrCred) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	tok := fmt.Sprintf("arm-token-%d", len(c.a.tokens)+1)
	c.a.tokens[tok] = true
	return azcore.AccessToken{Token: tok, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// IdentityEnv points a process's Azure managed identity at the fake.
func (a *ACRTasks) IdentityEnv() []string {
	return []string{"IDENTITY_ENDPOINT=" + a.URL + "/identity", "IDENTITY_HEADER=acr-identity-header"}
}

// Calls lists "METHOD path" of the ARM and blob calls.
func (a *ACRTasks) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

// Requests are the scheduleRun bodies received.
func (a *ACRTasks) Requests() []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]map[string]any(nil), a.requests...)
}

// Upload is the bytes of the n-th uploaded context.
func (a *ACRTasks) Upload(n int) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.uploads[fmt.Sprintf("source/%d.tar.gz", n)]
}

const acrRegistryPath = "/subscriptions/sub-1/resourceGroups/rg-build/providers/Microsoft.ContainerRegistry/registries/relayacr"

// OnRequest shows f every request the fake gets, before it is served.
func (a *ACRTasks) OnRequest(f func(*http.Request)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onRequest = f
}

func (a *ACRTasks) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.onRequest != nil {
		a.onRequest(r)
	}
	a.calls = append(a.calls, r.Method+" "+r.URL.Path)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	reply := func(code int, v any) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	fail := func(code int, c, msg string) {
		reply(code, map[string]any{"error": map[string]string{"code": c, "message": msg}})
	}
	p := r.URL.Path
	// The managed identity endpoint (App Service / Container Apps protocol) for a relay
	// process: the tokens it hands out are ones the fake accepts.
	if p == "/identity" {
		if r.Header.Get("X-IDENTITY-HEADER") != "acr-identity-header" {
			fail(http.StatusBadRequest, "invalid_request", "missing X-IDENTITY-HEADER")
			return
		}
		tok := fmt.Sprintf("mi-arm-token-%d", len(a.tokens)+1)
		a.tokens[tok] = true
		reply(http.StatusOK, map[string]string{"access_token": tok, "token_type": "Bearer", "resource": r.URL.Query().Get("resource"),
			"expires_on": fmt.Sprint(time.Now().Add(time.Hour).Unix())})
		return
	}
	// Blob endpoints: SAS-signed, no bearer token.
	if strings.HasPrefix(p, "/blob/") {
		if r.URL.Query().Get("sig") != "fake-sas" {
			fail(http.StatusForbidden, "AuthenticationFailed", "Server failed to authenticate the request.")
			return
		}
		key := strings.TrimPrefix(p, "/blob/")
		switch {
		case r.Method == http.MethodPut && r.Header.Get("x-ms-blob-type") == "BlockBlob":
			b, _ := io.ReadAll(r.Body)
			a.uploads[key] = b
			w.WriteHeader(http.StatusCreated)
		case r.Method == http.MethodGet && strings.HasPrefix(key, "logs/"):
			run := a.runs[strings.TrimPrefix(key, "logs/")]
			if run == nil {
				fail(http.StatusNotFound, "BlobNotFound", "The specified blob does not exist.")
				return
			}
			var off int
			fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &off)
			all := run.log.Bytes()
			if off >= len(all) {
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(all[off:])
		default:
			fail(http.StatusBadRequest, "InvalidHeaderValue", "x-ms-blob-type is required")
		}
		return
	}
	if strings.HasSuffix(p, "/providers/Microsoft.Authorization/permissions") && r.URL.Query().Get("api-version") == "2022-04-01" {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !a.tokens[tok] {
			fail(http.StatusUnauthorized, "InvalidAuthenticationToken", "The access token is invalid.")
			return
		}
		reply(http.StatusOK, map[string]any{"value": []map[string]any{{"actions": a.Actions, "notActions": []string{}}}})
		return
	}
	if r.URL.Query().Get("api-version") != "2019-06-01-preview" {
		fail(http.StatusBadRequest, "InvalidApiVersionParameter", "The api-version is invalid.")
		return
	}
	if a.Throttle > 0 {
		a.Throttle--
		w.Header().Set("Retry-After", "0")
		fail(http.StatusTooManyRequests, "TooManyRequests", "The request is being throttled.")
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if a.Expired > 0 || !a.tokens[tok] {
		if a.Expired > 0 {
			a.Expired--
		}
		fail(http.StatusUnauthorized, "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than current UTC time.")
		return
	}
	rest, ok := strings.CutPrefix(p, acrRegistryPath)
	if !ok {
		fail(http.StatusNotFound, "ResourceNotFound", "The Resource was not found.")
		return
	}
	base := "http://" + r.Host
	switch {
	case rest == "/listBuildSourceUploadUrl" && r.Method == http.MethodPost:
		n := len(a.uploads) + 1
		rel := fmt.Sprintf("source/%d.tar.gz", n)
		reply(http.StatusOK, map[string]string{"uploadUrl": base + "/blob/" + rel + "?sv=2019-02-02&sig=fake-sas", "relativePath": rel})
	case rest == "/scheduleRun" && r.Method == http.MethodPost:
		var in map[string]any
		json.NewDecoder(r.Body).Decode(&in)
		a.requests = append(a.requests, in)
		src, _ := in["sourceLocation"].(string)
		names, _ := in["imageNames"].([]any)
		plat, _ := in["platform"].(map[string]any)
		if in["type"] != "DockerBuildRequest" || a.uploads[src] == nil || len(names) != 1 || plat == nil || in["isPushEnabled"] != true {
			fail(http.StatusBadRequest, "InvalidRequest", "a DockerBuildRequest needs an uploaded sourceLocation, one image name, a platform and isPushEnabled")
			return
		}
		timeout, _ := in["timeout"].(float64)
		if timeout < 300 || timeout > 28800 {
			fail(http.StatusBadRequest, "InvalidRequest", "timeout must be between 300 and 28800 seconds")
			return
		}
		id := fmt.Sprintf("cb%x", len(a.runs)+1)
		run := &acrFakeRun{id: id, status: "Queued", source: src, image: names[0].(string),
			platform: strings.ToLower(fmt.Sprint(plat["os"])) + "/" + fmt.Sprint(plat["architecture"])}
		if v, _ := plat["variant"].(string); v != "" {
			run.platform += "/" + v
		}
		a.runs[id] = run
		reply(http.StatusOK, a.runJSON(run))
	case strings.HasPrefix(rest, "/runs/"):
		parts := strings.Split(strings.TrimPrefix(rest, "/runs/"), "/")
		run := a.runs[parts[0]]
		if run == nil {
			fail(http.StatusNotFound, "RunNotFound", "The run was not found.")
			return
		}
		switch {
		case len(parts) == 1 && r.Method == http.MethodGet:
			a.advance(r.Context(), run)
			reply(http.StatusOK, a.runJSON(run))
		case len(parts) == 2 && parts[1] == "listLogSasUrl" && r.Method == http.MethodPost:
			reply(http.StatusOK, map[string]string{"logLink": base + "/blob/logs/" + run.id + "?sv=2019-02-02&sig=fake-sas"})
		case len(parts) == 2 && parts[1] == "cancel" && r.Method == http.MethodPost:
			run.status = "Canceled"
			fmt.Fprintf(&run.log, "Run %s was canceled\n", run.id)
			w.WriteHeader(http.StatusOK)
		default:
			fail(http.StatusNotFound, "ResourceNotFound", "The Resource was not found.")
		}
	default:
		fail(http.StatusNotFound, "ResourceNotFound", "The Resource was not found.")
	}
}

// advance moves a run one state per poll; the build itself happens on the way to the end.
func (a *ACRTasks) advance(ctx context.Context, run *acrFakeRun) {
	run.polls++
	switch {
	case run.status == "Queued":
		run.status = "Running"
		fmt.Fprintf(&run.log, "2026/11/22 09:00:00 Downloading source code...\n2026/11/22 09:00:01 Setting up Docker configuration...\nStep 1/3 : FROM scratch\n")
	case run.status != "Running" || a.Hang:
	case a.TimeoutRun:
		run.status = "Timeout"
		fmt.Fprintf(&run.log, "Run timed out after the configured timeout\n")
	case a.Fail:
		run.status = "Failed"
		fmt.Fprintf(&run.log, "Step 2/3 : RUN make\nmake: *** [Makefile:3: all] Error 2\nThe command '/bin/sh -c make' returned a non-zero code: 2\nRun ID: %s failed after 4s. Error: failed during run, err: exit status 1\n", run.id)
	default:
		dir := filepath.Join(a.dir, run.id)
		if err := untarGz(a.uploads[run.source], dir); err != nil {
			run.status = "Error"
			fmt.Fprintf(&run.log, "error unpacking source: %v\n", err)
			return
		}
		repo, tag, _ := strings.Cut(run.image, ":")
		d, log, err := a.Build(ctx, dir, run.platform, repo, tag)
		run.log.WriteString(log)
		if err != nil {
			run.status = "Failed"
			fmt.Fprintf(&run.log, "build failed: %v\n", err)
			return
		}
		run.digest, run.status = d, "Succeeded"
		fmt.Fprintf(&run.log, "%s: digest: %s size: 1234\nRun ID: %s was successful after 5s\n", tag, d, run.id)
	}
}

func (a *ACRTasks) runJSON(run *acrFakeRun) map[string]any {
	props := map[string]any{"runId": run.id, "status": run.status, "runType": "QuickRun", "platform": map[string]any{"os": "Linux"},
		"createTime": "2026-11-22T09:00:00Z", "provisioningState": "Succeeded"}
	if run.digest != "" {
		repo, tag, _ := strings.Cut(run.image, ":")
		props["outputImages"] = []map[string]string{{"registry": "relayacr.azurecr.io", "repository": repo, "tag": tag, "digest": run.digest}}
	}
	return map[string]any{"id": acrRegistryPath + "/runs/" + run.id, "type": "Microsoft.ContainerRegistry/registries/runs", "name": run.id, "properties": props}
}

func untarGz(b []byte, dir string) error {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(p), 0o755)
			data, _ := io.ReadAll(tr)
			if err := os.WriteFile(p, data, os.FileMode(h.Mode)); err != nil {
				return err
			}
		case tar.TypeSymlink:
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.Symlink(h.Linkname, p)
		}
	}
}
