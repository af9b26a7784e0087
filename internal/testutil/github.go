package testutil

import (
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

//go:embed testdata/octokit/*.json
var octokit embed.FS

// OctokitFixture returns a recorded api.github.com scenario of @octokit/fixtures
// (testdata/octokit/README.md): release-assets.json or release-assets-conflict.json.
func OctokitFixture(name string) []byte {
	b, err := octokit.ReadFile("testdata/octokit/" + name)
	if err != nil {
		panic(err)
	}
	return b
}

// GitHub is a stateful GitHub releases API (GitHub Enterprise Server layout: /api/v3/
// and /api/uploads/) whose responses are the recorded api.github.com ones of
// testdata/octokit with this fake's ids, names and URLs filled in.
type GitHub struct {
	t     testing.TB
	srv   *httptest.Server
	Token string

	mu       sync.Mutex
	releases []*fakeRelease
	nextID   int64
	Calls    int
	perPage  int // default page size, small so pagination is exercised
	// after runs once a call was served, with its number (crash tests cancel there).
	After func(n int)
	// fail answers the call with this status instead of serving it, when non-zero.
	Fail    func(n int, r *http.Request) int
	Scopes  string // X-Accepted-GitHub-Permissions style refusal when set: 403 on writes
	Land504 int    // the next this-many uploads are stored, then answered 504
	// Perms are the token's rights GET /repos/OWNER/NAME reports (a user's token); nil
	// reports none, as for an installation token.
	Perms     map[string]bool
	log       []string
	templRel  map[string]any
	templAsst map[string]any
	templ422  map[string]any
}

type fakeRelease struct {
	id          int64
	tag, name   string
	body        string
	draft       bool
	assets      []*fakeAsset
	attestCount int
}

type fakeAsset struct {
	id    int64
	name  string
	state string
	data  []byte
}

// NewGitHub serves the fake on 127.0.0.1 for the test; its repository is acme/shop and its
// token ghs_test.
func NewGitHub(t testing.TB) *GitHub {
	f := &GitHub{t: t, Token: "ghs_test", nextID: 1000, perPage: 3}
	type exchange struct {
		Method   string          `json:"method"`
		Path     string          `json:"path"`
		Status   int             `json:"status"`
		Response json.RawMessage `json:"response"`
	}
	var rec []exchange
	for _, file := range []string{"release-assets.json", "release-assets-conflict.json"} {
		b := OctokitFixture(file)
		var r []exchange
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		rec = append(rec, r...)
	}
	obj := func(raw json.RawMessage) map[string]any {
		var m map[string]any
		json.Unmarshal(raw, &m)
		return m
	}
	for _, r := range rec {
		switch {
		case r.Method == "get" && strings.Contains(r.Path, "/releases/tags/"):
			f.templRel = obj(r.Response)
		case r.Method == "post" && r.Status == 201:
			f.templAsst = obj(r.Response)
		case r.Method == "post" && r.Status == 422:
			f.templ422 = obj(r.Response)
		}
	}
	if f.templRel == nil || f.templAsst == nil || f.templ422 == nil {
		t.Fatal("the octokit fixtures lack a release, an uploaded asset or a 422")
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// BaseURL and UploadURL are the API roots, GitHub Enterprise Server style.
func (f *GitHub) BaseURL() string   { return f.srv.URL + "/api/v3/" }
func (f *GitHub) UploadURL() string { return f.srv.URL + "/api/uploads/" }

var (
	reReleases     = regexp.MustCompile(`^/api/v3/repos/([^/]+)/([^/]+)/releases$`)
	reRelease      = regexp.MustCompile(`^/api/v3/repos/([^/]+)/([^/]+)/releases/(\d+)$`)
	reAssets       = regexp.MustCompile(`^/api/v3/repos/([^/]+)/([^/]+)/releases/(\d+)/assets$`)
	reAsset        = regexp.MustCompile(`^/api/v3/repos/([^/]+)/([^/]+)/releases/assets/(\d+)$`)
	reUpload       = regexp.MustCompile(`^/api/uploads/repos/([^/]+)/([^/]+)/releases/(\d+)/assets$`)
	reAttest       = regexp.MustCompile(`^/api/v3/repos/([^/]+)/([^/]+)/attestations$`)
	reRepo         = regexp.MustCompile(`^/api/v3/repos/([^/]+)/([^/]+)$`)
	reByTag        = regexp.MustCompile(`^/api/v3/repos/([^/]+)/([^/]+)/releases/tags/(.+)$`)
	FakeGitHubRepo = "acme/shop"
)

func (f *GitHub) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	n := f.Calls
	f.log = append(f.log, r.Method+" "+r.URL.Path)
	if r.Header.Get("Authorization") != "Bearer "+f.Token {
		f.json(w, 401, map[string]any{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
		return
	}
	if f.Fail != nil {
		if code := f.Fail(n, r); code != 0 {
			if code == 403 {
				w.Header().Set("Retry-After", "1")
				f.json(w, 403, map[string]any{"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"})
			} else {
				f.json(w, code, map[string]any{"message": "Server Error"})
			}
			return
		}
	}
	if f.Scopes != "" && r.Method != http.MethodGet {
		w.Header().Set("X-Accepted-GitHub-Permissions", f.Scopes)
		f.json(w, 403, map[string]any{"message": "Resource not accessible by integration", "documentation_url": "https://docs.github.com/rest"})
		return
	}
	f.route(w, r)
	if f.After != nil {
		f.After(n)
	}
}

func (f *GitHub) route(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if m := reReleases.FindStringSubmatch(p); m != nil && m[1]+"/"+m[2] != FakeGitHubRepo {
		f.json(w, 404, map[string]any{"message": "Not Found"})
		return
	}
	switch {
	case reRepo.MatchString(p) && r.Method == http.MethodGet:
		m := reRepo.FindStringSubmatch(p)
		if m[1]+"/"+m[2] != FakeGitHubRepo {
			f.json(w, 404, map[string]any{"message": "Not Found"})
			return
		}
		repo := map[string]any{"id": 1, "name": m[2], "full_name": FakeGitHubRepo, "private": false}
		if f.Perms != nil {
			repo["permissions"] = f.Perms
		}
		f.json(w, 200, repo)
	case reReleases.MatchString(p) && r.Method == http.MethodGet:
		var out []any
		for i := len(f.releases) - 1; i >= 0; i-- { // newest first, as GitHub lists them
			out = append(out, f.releaseJSON(f.releases[i]))
		}
		f.page(w, r, out)
	case reReleases.MatchString(p) && r.Method == http.MethodPost:
		var in struct {
			Tag   string `json:"tag_name"`
			Name  string `json:"name"`
			Body  string `json:"body"`
			Draft bool   `json:"draft"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		for _, rel := range f.releases {
			if rel.tag == in.Tag && !rel.draft {
				f.json(w, 422, map[string]any{"message": "Validation Failed", "errors": []any{map[string]any{"resource": "Release", "code": "already_exists", "field": "tag_name"}}})
				return
			}
		}
		f.nextID++
		rel := &fakeRelease{id: f.nextID, tag: in.Tag, name: in.Name, body: in.Body, draft: in.Draft}
		f.releases = append(f.releases, rel)
		f.json(w, 201, f.releaseJSON(rel))
	case reByTag.MatchString(p):
		tag := reByTag.FindStringSubmatch(p)[3]
		for _, rel := range f.releases {
			if rel.tag == tag && !rel.draft { // drafts are not found by tag
				f.json(w, 200, f.releaseJSON(rel))
				return
			}
		}
		f.json(w, 404, map[string]any{"message": "Not Found"})
	case reRelease.MatchString(p) && r.Method == http.MethodPatch:
		rel := f.release(reRelease.FindStringSubmatch(p)[3])
		if rel == nil {
			f.json(w, 404, map[string]any{"message": "Not Found"})
			return
		}
		var in map[string]any
		json.NewDecoder(r.Body).Decode(&in)
		if v, ok := in["body"].(string); ok {
			rel.body = v
		}
		if v, ok := in["draft"].(bool); ok {
			rel.draft = v
		}
		f.json(w, 200, f.releaseJSON(rel))
	case reAssets.MatchString(p) && r.Method == http.MethodGet:
		rel := f.release(reAssets.FindStringSubmatch(p)[3])
		if rel == nil {
			f.json(w, 404, map[string]any{"message": "Not Found"})
			return
		}
		var out []any
		for _, a := range rel.assets {
			out = append(out, f.assetJSON(a))
		}
		f.page(w, r, out)
	case reUpload.MatchString(p) && r.Method == http.MethodPost:
		rel := f.release(reUpload.FindStringSubmatch(p)[3])
		name := r.URL.Query().Get("name")
		if rel == nil || name == "" {
			f.json(w, 404, map[string]any{"message": "Not Found"})
			return
		}
		for _, a := range rel.assets {
			if a.name == name {
				f.json(w, 422, f.templ422)
				return
			}
		}
		data, err := io.ReadAll(r.Body)
		f.nextID++
		a := &fakeAsset{id: f.nextID, name: name, state: "uploaded", data: data}
		if err != nil || int64(len(data)) != r.ContentLength {
			a.state = "starter" // GitHub keeps a broken upload around in this state
		}
		rel.assets = append(rel.assets, a)
		if f.Land504 > 0 {
			f.Land504--
			f.json(w, 504, map[string]any{"message": "We couldn't respond to your request in time."})
			return
		}
		f.json(w, 201, f.assetJSON(a))
	case reAsset.MatchString(p):
		id := reAsset.FindStringSubmatch(p)[3]
		rel, a := f.asset(id)
		if a == nil {
			f.json(w, 404, map[string]any{"message": "Not Found"})
			return
		}
		switch r.Method {
		case http.MethodGet:
			if r.Header.Get("Accept") == "application/octet-stream" {
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Write(a.data)
				return
			}
			f.json(w, 200, f.assetJSON(a))
		case http.MethodPatch:
			var in struct {
				Name string `json:"name"`
			}
			json.NewDecoder(r.Body).Decode(&in)
			for _, o := range rel.assets {
				if o.name == in.Name && o != a {
					f.json(w, 422, f.templ422)
					return
				}
			}
			if in.Name != "" {
				a.name = in.Name
			}
			f.json(w, 200, f.assetJSON(a))
		case http.MethodDelete:
			for i, o := range rel.assets {
				if o == a {
					rel.assets = append(rel.assets[:i], rel.assets[i+1:]...)
				}
			}
			w.WriteHeader(204)
		}
	case reAttest.MatchString(p) && r.Method == http.MethodPost:
		var in struct {
			Bundle json.RawMessage `json:"bundle"`
		}
		if json.NewDecoder(r.Body).Decode(&in) != nil || len(in.Bundle) == 0 {
			f.json(w, 422, map[string]any{"message": "Validation Failed"})
			return
		}
		f.nextID++
		f.json(w, 201, map[string]any{"id": f.nextID})
	default:
		f.t.Errorf("fake GitHub: unexpected %s %s", r.Method, r.URL)
		f.json(w, 404, map[string]any{"message": "Not Found"})
	}
}

// page serves one page of items with GitHub's Link header.
func (f *GitHub) page(w http.ResponseWriter, r *http.Request, items []any) {
	per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
	if per <= 0 || per > f.perPage {
		per = f.perPage // the server decides; clients must follow Link
	}
	pg, _ := strconv.Atoi(r.URL.Query().Get("page"))
	if pg < 1 {
		pg = 1
	}
	lo, hi := (pg-1)*per, pg*per
	if lo > len(items) {
		lo = len(items)
	}
	if hi > len(items) {
		hi = len(items)
	}
	if hi < len(items) {
		u := *r.URL
		q := u.Query()
		q.Set("page", strconv.Itoa(pg+1))
		q.Set("per_page", strconv.Itoa(per))
		u.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<%s%s>; rel="next"`, f.srv.URL, u.RequestURI()))
	}
	out := items[lo:hi]
	if out == nil {
		out = []any{}
	}
	f.json(w, 200, out)
}

func (f *GitHub) release(id string) *fakeRelease {
	for _, r := range f.releases {
		if strconv.FormatInt(r.id, 10) == id {
			return r
		}
	}
	return nil
}

func (f *GitHub) asset(id string) (*fakeRelease, *fakeAsset) {
	for _, r := range f.releases {
		for _, a := range r.assets {
			if strconv.FormatInt(a.id, 10) == id {
				return r, a
			}
		}
	}
	return nil, nil
}

func clone(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	json.Unmarshal(b, &out)
	return out
}

func (f *GitHub) releaseJSON(r *fakeRelease) map[string]any {
	m := clone(f.templRel)
	api := fmt.Sprintf("%s/api/v3/repos/%s/releases/%d", f.srv.URL, FakeGitHubRepo, r.id)
	m["id"], m["url"], m["assets_url"] = r.id, api, api+"/assets"
	m["upload_url"] = fmt.Sprintf("%s/api/uploads/repos/%s/releases/%d/assets{?name,label}", f.srv.URL, FakeGitHubRepo, r.id)
	m["html_url"] = fmt.Sprintf("https://github.example/%s/releases/tag/%s", FakeGitHubRepo, r.tag)
	m["tag_name"], m["name"], m["body"], m["draft"] = r.tag, r.name, r.body, r.draft
	if r.draft {
		m["published_at"] = nil
	}
	var as []any
	for _, a := range r.assets {
		as = append(as, f.assetJSON(a))
	}
	if as == nil {
		as = []any{}
	}
	m["assets"] = as
	return m
}

// assetJSON is the recorded asset with this one's facts; like the 2017 recording, it carries
// no digest, so the publisher must compare content by downloading.
func (f *GitHub) assetJSON(a *fakeAsset) map[string]any {
	m := clone(f.templAsst)
	m["id"], m["name"], m["label"], m["state"], m["size"] = a.id, a.name, "", a.state, len(a.data)
	m["content_type"] = "application/octet-stream"
	m["url"] = fmt.Sprintf("%s/api/v3/repos/%s/releases/assets/%d", f.srv.URL, FakeGitHubRepo, a.id)
	return m
}

func (f *GitHub) json(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// State renders the releases for comparisons: tag, draft, and each asset's name and content.
func (f *GitHub) State() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.releases {
		var as []string
		for _, a := range r.assets {
			as = append(as, fmt.Sprintf("%s=%q(%s)", a.name, a.data, a.state))
		}
		sort.Strings(as)
		out = append(out, fmt.Sprintf("%s draft=%v body=%q [%s]", r.tag, r.draft, r.body, strings.Join(as, " ")))
	}
	return strings.Join(out, "\n")
}

// Log lists the requests served, as "METHOD /path", in order.
func (f *GitHub) Log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// FakeRelease is a snapshot of one release of the fake.
type FakeRelease struct {
	Tag    string
	Draft  bool
	Body   string
	Assets []FakeAsset
}

// FakeAsset is one asset of a FakeRelease.
type FakeAsset struct {
	Name, State string
	Data        []byte
}

// Releases returns a snapshot of the fake's releases.
func (f *GitHub) Releases() []FakeRelease {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []FakeRelease
	for _, r := range f.releases {
		fr := FakeRelease{Tag: r.tag, Draft: r.draft, Body: r.body}
		for _, a := range r.assets {
			fr.Assets = append(fr.Assets, FakeAsset{Name: a.name, State: a.state, Data: append([]byte(nil), a.data...)})
		}
		out = append(out, fr)
	}
	return out
}

// CallCount is how many API calls the fake has served.
func (f *GitHub) CallCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Calls
}
