package testutil

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// CheckAppJWT checks a GitHub App JWT as GitHub does: RS256 by the App's public key, iss =
// the app id, at most ten minutes of life, not expired, not issued in the future.
func CheckAppJWT(header string, pub *rsa.PublicKey, appID string, now time.Time) error {
	jwt, _ := strings.CutPrefix(header, "Bearer ")
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return errors.New("A JSON web token could not be decoded")
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) != nil {
		return errors.New("'Issuer' claim ('iss') must be an Integer")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Iat, Exp int64
		Iss      string
	}
	json.Unmarshal(raw, &c)
	if c.Iss != appID || c.Exp-c.Iat > 600 || c.Exp < now.Unix() || c.Iat > now.Unix() {
		return errors.New("'Expiration time' claim ('exp') is too far in the future")
	}
	return nil
}

// Runner is a self-hosted runner registration in the fake.
type Runner struct {
	ID     int64    `json:"id"`
	Name   string   `json:"name"`
	OS     string   `json:"os"`
	Status string   `json:"status"`
	Busy   bool     `json:"busy"`
	Labels []string `json:"-"`
	Group  int64    `json:"-"`
}

// RunnerRelease is one release of actions/runner, as GET /repos/actions/runner/releases
// lists it.
type RunnerRelease struct {
	Tag        string
	Published  time.Time
	Prerelease bool
}

// FakeRunnerVersion is the version FakeRunnerDir's runner reports.
const FakeRunnerVersion = "2.321.0"

// GitHubRunners is the GitHub REST API a runner entrypoint and `relay doctor` use: App JWT
// auth (checked with the App's public key), installation lookup and access tokens (repo and
// org), generate-jitconfig, registration tokens, runner listing and deletion, queued
// workflow runs, with the response shapes of GitHub's REST API documentation.
type GitHubRunners struct {
	URL    string // API root, like https://api.github.com
	AppID  string
	AppKey []byte // PEM (PKCS#1), as GitHub issues it
	// Installed is the repository ("owner/name") or organization the App is installed on.
	Installed string
	// Permissions the installation tokens carry.
	Permissions map[string]string
	// NoJIT answers 404 to generate-jitconfig, like a GitHub Enterprise Server before 3.10.
	NoJIT bool
	// Now is the fake's clock for JWT checks (default time.Now).
	Now func() time.Time
	// Releases are actions/runner's, newest first (default: FakeRunnerVersion alone); the
	// list is public, answered with or without a token.
	Releases []RunnerRelease

	mu      sync.Mutex
	pub     *rsa.PublicKey
	tokens  map[string]bool // installation tokens handed out
	regs    map[string]bool // registration tokens handed out
	runners map[int64]*Runner
	byToken map[string]int64 // registration token -> the runner config.sh registered with it
	nextID  int64
	calls   []string
}

// StartGitHubRunners serves the fake for an App installed on installed (OWNER/NAME or ORG).
func StartGitHubRunners(t testing.TB, installed string) *GitHubRunners {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	g := &GitHubRunners{AppID: "31337", Installed: installed, pub: &key.PublicKey, tokens: map[string]bool{}, regs: map[string]bool{},
		runners: map[int64]*Runner{}, byToken: map[string]int64{}, nextID: 100, Now: time.Now,
		Releases:    []RunnerRelease{{Tag: "v" + FakeRunnerVersion, Published: time.Date(2026, 11, 2, 15, 4, 0, 0, time.UTC)}},
		Permissions: map[string]string{"administration": "write", "organization_self_hosted_runners": "write", "actions": "read", "metadata": "read"},
		AppKey:      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})}
	srv := httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

// AddRunner registers a runner directly (one left behind by an earlier replica).
func (g *GitHubRunners) AddRunner(name, status string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nextID++
	g.runners[g.nextID] = &Runner{ID: g.nextID, Name: name, OS: "Linux", Status: status, Labels: []string{"self-hosted"}, Group: 1}
	return g.nextID
}

// SetStatus changes a runner's status, as the Actions service does when it connects.
func (g *GitHubRunners) SetStatus(id int64, status string, busy bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if r, ok := g.runners[id]; ok {
		r.Status, r.Busy = status, busy
	}
}

// Runners lists the registrations that exist now.
func (g *GitHubRunners) Runners() []Runner {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Runner
	for _, r := range g.runners {
		out = append(out, *r)
	}
	return out
}

// RunnerByName finds a registration by name.
func (g *GitHubRunners) RunnerByName(name string) (Runner, bool) {
	for _, r := range g.Runners() {
		if r.Name == name {
			return r, true
		}
	}
	return Runner{}, false
}

// Calls lists "METHOD path" of every API request, in order.
func (g *GitHubRunners) Calls() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.calls...)
}

// Handler serves the fake's API (for a fake that fronts it, as Broker does).
func (g *GitHubRunners) Handler() http.Handler { return http.HandlerFunc(g.serve) }

// RegistrationIssued says whether the fake handed out this registration token.
func (g *GitHubRunners) RegistrationIssued(tok string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.regs[tok]
}

// IssueRegistrationToken hands out a registration token, as a platform would.
func (g *GitHubRunners) IssueRegistrationToken() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	tok := fmt.Sprintf("AABBREG%d", len(g.regs)+1)
	g.regs[tok] = true
	return tok
}

var (
	reScope     = `^/(repos/[^/]+/[^/]+|orgs/[^/]+|enterprises/[^/]+)`
	reJIT       = regexp.MustCompile(reScope + `/actions/runners/generate-jitconfig$`)
	reRegToken  = regexp.MustCompile(reScope + `/actions/runners/registration-token$`)
	reRunners   = regexp.MustCompile(reScope + `/actions/runners$`)
	reRunner    = regexp.MustCompile(reScope + `/actions/runners/(\d+)$`)
	reQueued    = regexp.MustCompile(`^/repos/[^/]+/[^/]+/actions/runs$`)
	reInstalled = regexp.MustCompile(`^/(repos/[^/]+/[^/]+|orgs/[^/]+)/installation$`)
	reTokens    = regexp.MustCompile(`^/app/installations/(\d+)/access_tokens$`)
)

func (g *GitHubRunners) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, r.Method+" "+r.URL.Path)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	reply := func(code int, v any) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	fail := func(code int, msg string) {
		reply(code, map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest/actions/self-hosted-runners"})
	}
	p := r.URL.Path
	// What config.sh does with a registration token, for a fake config.sh to call.
	if p == "/_fake/register" || p == "/_fake/remove" {
		var in struct {
			Token, Name string
			Labels      []string
		}
		json.NewDecoder(r.Body).Decode(&in)
		if !g.regs[in.Token] {
			fail(http.StatusNotFound, "registration token not found")
			return
		}
		if p == "/_fake/remove" {
			delete(g.runners, g.byToken[in.Token])
			w.WriteHeader(http.StatusNoContent)
			return
		}
		g.nextID++
		g.runners[g.nextID] = &Runner{ID: g.nextID, Name: in.Name, OS: "Linux", Status: "offline", Labels: in.Labels, Group: 1}
		g.byToken[in.Token] = g.nextID
		reply(http.StatusCreated, map[string]any{"id": g.nextID})
		return
	}
	// App endpoints take the App JWT.
	if m := reInstalled.FindStringSubmatch(p); m != nil || reTokens.MatchString(p) {
		if err := CheckAppJWT(r.Header.Get("Authorization"), g.pub, g.AppID, g.Now()); err != nil {
			fail(http.StatusUnauthorized, err.Error())
			return
		}
		if m != nil {
			target := strings.TrimPrefix(strings.TrimPrefix(m[1], "repos/"), "orgs/")
			if target != g.Installed && !strings.HasPrefix(target, g.Installed+"/") {
				fail(http.StatusNotFound, "Not Found")
				return
			}
			reply(http.StatusOK, map[string]any{"id": 4242, "app_id": g.AppID, "target_type": "Organization", "account": map[string]any{"login": strings.Split(g.Installed, "/")[0]}})
			return
		}
		tok := fmt.Sprintf("ghs_fakeinstallation%03d", len(g.tokens)+1)
		g.tokens[tok] = true
		reply(http.StatusCreated, map[string]any{"token": tok, "expires_at": g.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"permissions": g.Permissions, "repository_selection": "selected"})
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if p == "/repos/actions/runner/releases" && r.Method == http.MethodGet && (tok == "" || g.tokens[tok]) {
		var out []map[string]any
		for _, rel := range g.Releases {
			out = append(out, map[string]any{"tag_name": rel.Tag, "name": rel.Tag, "draft": false, "prerelease": rel.Prerelease,
				"published_at": rel.Published.UTC().Format(time.RFC3339)})
		}
		reply(http.StatusOK, out)
		return
	}
	if !g.tokens[tok] {
		fail(http.StatusUnauthorized, "Bad credentials")
		return
	}
	scopeOK := func(scope string) bool {
		t := strings.TrimPrefix(strings.TrimPrefix(scope, "repos/"), "orgs/")
		return t == g.Installed || strings.HasPrefix(t, g.Installed+"/")
	}
	switch {
	case reJIT.MatchString(p) && r.Method == http.MethodPost:
		scope := reJIT.FindStringSubmatch(p)[1]
		if g.NoJIT {
			fail(http.StatusNotFound, "Not Found")
			return
		}
		if !scopeOK(scope) {
			fail(http.StatusForbidden, "Resource not accessible by integration")
			return
		}
		var in struct {
			Name          string   `json:"name"`
			RunnerGroupID *int64   `json:"runner_group_id"`
			Labels        []string `json:"labels"`
			WorkFolder    string   `json:"work_folder"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		if in.RunnerGroupID == nil {
			fail(http.StatusUnprocessableEntity, "Invalid input: object is missing required key: runner_group_id.")
			return
		}
		if in.Name == "" || len(in.Labels) == 0 {
			fail(http.StatusUnprocessableEntity, "Invalid input: name and at least one label are required.")
			return
		}
		for _, x := range g.runners {
			if x.Name == in.Name {
				fail(http.StatusConflict, "Already exists - A runner with the name "+in.Name+" already exists.")
				return
			}
		}
		g.nextID++
		rn := &Runner{ID: g.nextID, Name: in.Name, OS: "unknown", Status: "offline", Labels: in.Labels, Group: *in.RunnerGroupID}
		g.runners[rn.ID] = rn
		cfg := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf(`{".runner":"runner-%d",".credentials":"secret-%d"}`, rn.ID, rn.ID)))
		reply(http.StatusCreated, map[string]any{"runner": runnerJSON(rn), "encoded_jit_config": cfg})
	case reRegToken.MatchString(p) && r.Method == http.MethodPost:
		if !scopeOK(reRegToken.FindStringSubmatch(p)[1]) {
			fail(http.StatusForbidden, "Resource not accessible by integration")
			return
		}
		reg := fmt.Sprintf("AABBREG%d", len(g.regs)+1)
		g.regs[reg] = true
		reply(http.StatusCreated, map[string]any{"token": reg, "expires_at": g.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	case reRunners.MatchString(p) && r.Method == http.MethodGet:
		if !scopeOK(reRunners.FindStringSubmatch(p)[1]) || (g.Permissions["administration"] == "" && g.Permissions["organization_self_hosted_runners"] == "") {
			fail(http.StatusForbidden, "Resource not accessible by integration")
			return
		}
		name := r.URL.Query().Get("name")
		list := []any{}
		for _, x := range g.runners {
			if name == "" || x.Name == name {
				list = append(list, runnerJSON(x))
			}
		}
		reply(http.StatusOK, map[string]any{"total_count": len(list), "runners": list})
	case reRunner.MatchString(p) && r.Method == http.MethodDelete:
		m := reRunner.FindStringSubmatch(p)
		id, _ := strconv.ParseInt(m[2], 10, 64)
		if _, ok := g.runners[id]; !ok {
			fail(http.StatusNotFound, "Not Found")
			return
		}
		delete(g.runners, id)
		w.WriteHeader(http.StatusNoContent)
	case p == "/installation/repositories" && r.Method == http.MethodGet:
		full := g.Installed
		if !strings.Contains(full, "/") {
			full += "/shop"
		}
		reply(http.StatusOK, map[string]any{"total_count": 1, "repositories": []map[string]any{{"id": 1296269, "name": strings.Split(full, "/")[1], "full_name": full}}})
	case reQueued.MatchString(p) && r.Method == http.MethodGet:
		if g.Permissions["actions"] == "" {
			fail(http.StatusForbidden, "Resource not accessible by integration")
			return
		}
		reply(http.StatusOK, map[string]any{"total_count": 0, "workflow_runs": []any{}})
	default:
		fail(http.StatusNotFound, "Not Found")
	}
}

func runnerJSON(r *Runner) map[string]any {
	labels := []map[string]any{}
	for i, l := range r.Labels {
		typ := "custom"
		if l == "self-hosted" || l == "Linux" || l == "X64" {
			typ = "read-only"
		}
		labels = append(labels, map[string]any{"id": i + 1, "name": l, "type": typ})
	}
	return map[string]any{"id": r.ID, "name": r.Name, "os": r.OS, "status": r.Status, "busy": r.Busy, "labels": labels, "runner_group_id": r.Group}
}
