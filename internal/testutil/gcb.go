package testutil

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// RemoteBuildFunc really builds a remote build's context (unpacked in dir) for platform and
// pushes it as image (REPOSITORY:TAG), returning the pushed manifest digest and the log.
type RemoteBuildFunc func(ctx context.Context, dir, platform, image string) (digest, log string, err error)

// CloudBuild is Google Cloud Build's REST API (builds create, get, cancel), the Cloud
// Storage media upload, Cloud Logging's entries:list, and the metadata server's token
// endpoint (GCE_METADATA_HOST) for application default credentials. A build moves QUEUED ->
// WORKING -> (built by Build) SUCCESS or FAILURE, one state per GET.
type CloudBuild struct {
	onRequest func(*http.Request)
	URL       string
	Build     RemoteBuildFunc
	// Faults: Throttle and Expired answer the next calls 429 or 401; Fail, Hang and
	// TimeoutRun end builds FAILURE, never, or TIMEOUT; LogsForbidden refuses entries:list.
	Throttle, Expired      int
	Fail, Hang, TimeoutRun bool
	LogsForbidden          bool
	// Permissions are what testIamPermissions grants (on the project and the bucket).
	Permissions []string

	mu      sync.Mutex
	tokens  map[string]bool
	objects map[string][]byte
	builds  map[string]*gcbFakeBuild
	bodies  []map[string]any
	calls   []string
	dir     string
}

type gcbFakeBuild struct {
	id, status, object, image, platform string
	logs                                []string
	digest                              string
}

// StartCloudBuild serves the fake.
func StartCloudBuild(t testing.TB, build RemoteBuildFunc) *CloudBuild {
	t.Helper()
	g := &CloudBuild{Build: build, Permissions: []string{"cloudbuild.builds.create", "cloudbuild.builds.get", "cloudbuild.builds.update", "storage.objects.create"}, tokens: map[string]bool{}, objects: map[string][]byte{}, builds: map[string]*gcbFakeBuild{}, dir: t.TempDir()}
	srv := httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

// Tokens is a token source whose tokens the fake accepts.
func (g *CloudBuild) Tokens() oauth2.TokenSource { return gcbTokens{g} }

type gcbTokens struct{ g *CloudBuild }

func (s gcbTokens) Token() (*oauth2.Token, error) {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	tok := fmt.Sprintf("ya29.fake-%d", len(s.g.tokens)+1)
	s.g.tokens[tok] = true
	return &oauth2.Token{AccessToken: tok, TokenType: "Bearer", Expiry: time.Now().Add(time.Hour)}, nil
}

// MetadataEnv points a process's application default credentials at the fake's metadata server.
func (g *CloudBuild) MetadataEnv() []string {
	return []string{"GCE_METADATA_HOST=" + strings.TrimPrefix(g.URL, "http://"), "GOOGLE_APPLICATION_CREDENTIALS="}
}

// Bodies are the build create requests received.
func (g *CloudBuild) Bodies() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.bodies...)
}

// Calls lists "METHOD path" of every request.
func (g *CloudBuild) Calls() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.calls...)
}

// Object is an uploaded Cloud Storage object.
func (g *CloudBuild) Object(bucket, name string) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.objects[bucket+"/"+name]
}

// OnRequest shows f every request the fake gets, before it is served.
func (g *CloudBuild) OnRequest(f func(*http.Request)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.onRequest = f
}

func (g *CloudBuild) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.onRequest != nil {
		g.onRequest(r)
	}
	p := r.URL.Path
	g.calls = append(g.calls, r.Method+" "+p)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	reply := func(code int, v any) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	fail := func(code int, status, msg string) {
		reply(code, map[string]any{"error": map[string]any{"code": code, "message": msg, "status": status}})
	}
	// The metadata server's token, as application default credentials ask for it on GCE,
	// GKE and Cloud Run.
	if strings.HasPrefix(p, "/computeMetadata/v1/") {
		if r.Header.Get("Metadata-Flavor") != "Google" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		switch {
		case strings.HasSuffix(p, "/token"):
			tok := fmt.Sprintf("ya29.metadata-%d", len(g.tokens)+1)
			g.tokens[tok] = true
			reply(http.StatusOK, map[string]any{"access_token": tok, "expires_in": 3599, "token_type": "Bearer"})
		case strings.HasSuffix(p, "/project/project-id"):
			w.Header().Set("Content-Type", "application/text")
			io.WriteString(w, "acme-build")
		default:
			w.Header().Set("Content-Type", "application/text")
			io.WriteString(w, "default")
		}
		return
	}
	if g.Throttle > 0 {
		g.Throttle--
		w.Header().Set("Retry-After", "0")
		fail(http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Build and Operation Get requests'.")
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if g.Expired > 0 || !g.tokens[tok] {
		if g.Expired > 0 {
			g.Expired--
		}
		fail(http.StatusUnauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.")
		return
	}
	granted := func(asked []string) []string {
		out := []string{}
		for _, a := range asked {
			for _, p := range g.Permissions {
				if a == p {
					out = append(out, a)
				}
			}
		}
		return out
	}
	switch {
	case strings.HasSuffix(p, ":testIamPermissions") && r.Method == http.MethodPost:
		var in struct{ Permissions []string }
		json.NewDecoder(r.Body).Decode(&in)
		reply(http.StatusOK, map[string]any{"permissions": granted(in.Permissions)})
	case strings.HasSuffix(p, "/iam/testPermissions") && r.Method == http.MethodGet:
		reply(http.StatusOK, map[string]any{"kind": "storage#testIamPermissionsResponse", "permissions": granted(r.URL.Query()["permissions"])})
	case strings.HasPrefix(p, "/upload/storage/v1/b/") && r.Method == http.MethodPost:
		bucket := strings.TrimSuffix(strings.TrimPrefix(p, "/upload/storage/v1/b/"), "/o")
		if r.URL.Query().Get("uploadType") != "media" {
			fail(http.StatusBadRequest, "INVALID_ARGUMENT", "uploadType=media expected")
			return
		}
		b, _ := io.ReadAll(r.Body)
		name := r.URL.Query().Get("name")
		g.objects[bucket+"/"+name] = b
		reply(http.StatusOK, map[string]any{"kind": "storage#object", "bucket": bucket, "name": name, "generation": "1732262400000000", "size": fmt.Sprint(len(b))})
	case p == "/v2/entries:list" && r.Method == http.MethodPost:
		if g.LogsForbidden {
			fail(http.StatusForbidden, "PERMISSION_DENIED", "Permission 'logging.logEntries.list' denied on resource (or it may not exist).")
			return
		}
		var in struct{ Filter string }
		json.NewDecoder(r.Body).Decode(&in)
		var entries []map[string]any
		for _, b := range g.builds {
			if !strings.Contains(in.Filter, `build_id="`+b.id+`"`) {
				continue
			}
			for i, l := range b.logs {
				entries = append(entries, map[string]any{"insertId": fmt.Sprintf("%s-%04d", b.id, i), "textPayload": l,
					"timestamp": fmt.Sprintf("2026-11-22T09:00:%02d.%06dZ", i/1000, i), "resource": map[string]any{"type": "build"}})
			}
		}
		reply(http.StatusOK, map[string]any{"entries": entries})
	case strings.HasPrefix(p, "/v1/projects/") && strings.Contains(p, "/builds"):
		rest := p[strings.Index(p, "/builds")+len("/builds"):]
		switch {
		case rest == "" && r.Method == http.MethodPost:
			var in map[string]any
			json.NewDecoder(r.Body).Decode(&in)
			g.bodies = append(g.bodies, in)
			src, _ := in["source"].(map[string]any)
			ss, _ := src["storageSource"].(map[string]any)
			images, _ := in["images"].([]any)
			steps, _ := in["steps"].([]any)
			if ss == nil || g.objects[fmt.Sprint(ss["bucket"])+"/"+fmt.Sprint(ss["object"])] == nil || len(images) != 1 || len(steps) == 0 {
				fail(http.StatusBadRequest, "INVALID_ARGUMENT", "a build needs an uploaded storageSource, steps and one image")
				return
			}
			args, _ := steps[0].(map[string]any)["args"].([]any)
			plat := ""
			for i, a := range args {
				if a == "--platform" && i+1 < len(args) {
					plat = fmt.Sprint(args[i+1])
				}
			}
			id := fmt.Sprintf("6b8a0f7e-%04d-4c3d-9a51-0c1e2f3a4b5c", len(g.builds)+1)
			b := &gcbFakeBuild{id: id, status: "QUEUED", object: fmt.Sprint(ss["bucket"]) + "/" + fmt.Sprint(ss["object"]), image: fmt.Sprint(images[0]), platform: plat}
			g.builds[id] = b
			reply(http.StatusOK, map[string]any{"name": "projects/acme-build/locations/global/operations/op-" + id,
				"metadata": map[string]any{"@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata", "build": g.buildJSON(b)}})
		case strings.HasSuffix(rest, ":cancel") && r.Method == http.MethodPost:
			b := g.builds[strings.TrimSuffix(strings.TrimPrefix(rest, "/"), ":cancel")]
			if b == nil {
				fail(http.StatusNotFound, "NOT_FOUND", "build not found")
				return
			}
			b.status = "CANCELLED"
			reply(http.StatusOK, g.buildJSON(b))
		case r.Method == http.MethodGet:
			b := g.builds[strings.TrimPrefix(rest, "/")]
			if b == nil {
				fail(http.StatusNotFound, "NOT_FOUND", "build not found")
				return
			}
			g.advance(r.Context(), b)
			reply(http.StatusOK, g.buildJSON(b))
		default:
			fail(http.StatusNotFound, "NOT_FOUND", "no such method")
		}
	default:
		fail(http.StatusNotFound, "NOT_FOUND", "no such method")
	}
}

func (g *CloudBuild) advance(ctx context.Context, b *gcbFakeBuild) {
	switch {
	case b.status == "QUEUED":
		b.status = "WORKING"
		b.logs = append(b.logs, "starting build \""+b.id+"\"", "FETCHSOURCE", "Fetching storage object: gs://"+b.object)
	case b.status != "WORKING" || g.Hang:
	case g.TimeoutRun:
		b.status = "TIMEOUT"
		b.logs = append(b.logs, "TIMEOUT", "ERROR: context deadline exceeded")
	case g.Fail:
		b.status = "FAILURE"
		b.logs = append(b.logs, "Step #0: #8 [3/3] RUN make", "Step #0: #8 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2", "ERROR: build step 0 \"gcr.io/cloud-builders/docker\" failed: step exited with non-zero status: 1")
	default:
		dir := filepath.Join(g.dir, b.id)
		if err := untarGz(g.objects[b.object], dir); err != nil {
			b.status = "INTERNAL_ERROR"
			return
		}
		d, log, err := g.Build(ctx, dir, b.platform, b.image)
		for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
			b.logs = append(b.logs, "Step #0: "+l)
		}
		if err != nil {
			b.status = "FAILURE"
			b.logs = append(b.logs, "ERROR: "+err.Error())
			return
		}
		b.digest, b.status = d, "SUCCESS"
		b.logs = append(b.logs, "PUSH", "Pushing "+b.image, "DONE")
	}
}

func (g *CloudBuild) buildJSON(b *gcbFakeBuild) map[string]any {
	m := map[string]any{"id": b.id, "projectId": "acme-build", "status": b.status,
		"logUrl": "https://console.cloud.google.com/cloud-build/builds/" + b.id + "?project=123456789"}
	if b.digest != "" {
		m["results"] = map[string]any{"images": []map[string]any{{"name": b.image, "digest": b.digest}}}
	}
	if b.status == "FAILURE" {
		m["failureInfo"] = map[string]any{"type": "USER_BUILD_STEP", "detail": "Build step failure: build step 0 \"gcr.io/cloud-builders/docker\" failed: step exited with non-zero status: 1"}
	}
	return m
}
