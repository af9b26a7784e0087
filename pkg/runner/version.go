package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/pkg/github"
)

// SupportWindow is how long GitHub keeps serving a runner version once a newer one is out:
// after it the runner is "deprecated and cannot receive messages".
const SupportWindow = 30 * 24 * time.Hour

// Version is an Actions runner release (2.337.0).
type Version struct{ Major, Minor, Patch int }

var reVersion = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)$`)

// ParseVersion reads "2.337.0" or "v2.337.0".
func ParseVersion(s string) (Version, error) {
	m := reVersion.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Version{}, fmt.Errorf("%q is not an Actions runner version (MAJOR.MINOR.PATCH, like 2.337.0)", s)
	}
	var v Version
	for i, p := range []*int{&v.Major, &v.Minor, &v.Patch} {
		*p, _ = strconv.Atoi(m[i+1])
	}
	return v, nil
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less orders versions as releases.
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// InstalledVersion is the version of the Actions runner unpacked in dir: read from the
// listener's .NET dependency manifest (no process started), else from `Runner.Listener
// --version`.
func InstalledVersion(ctx context.Context, dir string) (Version, error) {
	deps := filepath.Join(dir, "bin", "Runner.Listener.deps.json")
	if b, err := os.ReadFile(deps); err == nil {
		if v, ok := depsVersion(b); ok {
			return v, nil
		}
	}
	listener := filepath.Join(dir, "bin", "Runner.Listener")
	if _, err := os.Stat(listener); err != nil {
		return Version{}, fmt.Errorf("no Actions runner in %s (neither bin/Runner.Listener.deps.json nor bin/Runner.Listener): point --runner-dir at an unpacked actions/runner release", dir)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, listener, "--version")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w", listener, err)
	}
	return ParseVersion(string(out))
}

// depsVersion finds "Runner.Listener/2.337.0" among the manifest's libraries: the runner's
// build publishes its projects with the release's version.
func depsVersion(b []byte) (Version, bool) {
	var m struct {
		Libraries map[string]json.RawMessage `json:"libraries"`
	}
	if json.Unmarshal(b, &m) != nil {
		return Version{}, false
	}
	for k := range m.Libraries {
		if s, ok := strings.CutPrefix(k, "Runner.Listener/"); ok {
			if v, err := ParseVersion(s); err == nil {
				return v, true
			}
		}
	}
	return Version{}, false
}

// PinnedVersion reads the runner version off an image reference of the official runner
// image (…/actions/actions-runner:2.337.0@sha256:…); ok is false for any other image.
func PinnedVersion(ref string) (Version, bool) {
	name, _, _ := strings.Cut(ref, "@")
	i := strings.LastIndex(name, ":")
	if i < 0 || strings.Contains(name[i:], "/") {
		return Version{}, false
	}
	repo, tag := name[:i], name[i+1:]
	if !strings.HasSuffix(repo, "/actions-runner") {
		return Version{}, false
	}
	v, err := ParseVersion(tag)
	return v, err == nil
}

// Freshness is where a runner version stands in GitHub's support window.
type Freshness struct {
	Version  Version
	Newest   Version
	NewestAt time.Time
	// Superseded is when the first release newer than Version came out (zero: Version is
	// the newest); RefusedFrom is Superseded + SupportWindow.
	Superseded, RefusedFrom time.Time
	Refused                 bool // GitHub refuses Version now
}

// Behind says whether a newer release exists.
func (f Freshness) Behind() bool { return !f.Superseded.IsZero() }

// Summary states the facts in one line, dates in UTC.
func (f Freshness) Summary(now time.Time) string {
	day := func(t time.Time) string { return t.UTC().Format("2006-01-02") }
	switch {
	case !f.Behind() && f.Version == f.Newest:
		return fmt.Sprintf("runner %s is the newest actions/runner release (%s)", f.Version, day(f.NewestAt))
	case !f.Behind():
		return fmt.Sprintf("runner %s is not behind the newest actions/runner release %s (%s)", f.Version, f.Newest, day(f.NewestAt))
	case f.Refused:
		return fmt.Sprintf("runner %s is more than 30 days behind: GitHub refuses it since %s (newest %s, %s)", f.Version, day(f.RefusedFrom), f.Newest, day(f.NewestAt))
	default:
		days := int(f.RefusedFrom.Sub(now).Hours() / 24)
		return fmt.Sprintf("runner %s is behind the newest release %s (%s): GitHub refuses it from %s, in %d days", f.Version, f.Newest, day(f.NewestAt), day(f.RefusedFrom), days)
	}
}

// Fix says how to move to the newest release.
func (f Freshness) Fix() string {
	return fmt.Sprintf("re-pin the runner image's base on ghcr.io/actions/actions-runner:%s with its digest (`crane digest ghcr.io/actions/actions-runner:%s`; in relay's repository `image/pin.sh %s` prints the line), then rebuild and roll out the image (docs/runner.md, The image)", f.Newest, f.Newest, f.Newest)
}

// VersionOptions say where to read actions/runner's releases.
type VersionOptions struct {
	// APIURL is the REST root (default https://api.github.com); a GitHub Enterprise Server
	// without the actions/runner repository answers 404 (ErrNoReleases).
	APIURL string
	// Token is optional: without it the request is anonymous (60 an hour per address).
	Token   TokenFunc
	HTTP    *http.Client
	Retrier *httpx.Retrier
	Now     func() time.Time
}

// ErrNoReleases is a server that does not host actions/runner's releases.
var ErrNoReleases = errors.New("this server has no actions/runner releases (a GitHub Enterprise Server sets its own minimum runner version)")

// CheckVersion places v among actions/runner's published releases.
func CheckVersion(ctx context.Context, v Version, o VersionOptions) (Freshness, error) {
	rels, err := Releases(ctx, o)
	if err != nil {
		return Freshness{}, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return Place(v, rels, o.Now())
}

// Release is one published actions/runner release.
type Release struct {
	Version   Version
	Published time.Time
}

// Releases reads actions/runner's published releases, drafts and prereleases left out.
func Releases(ctx context.Context, o VersionOptions) ([]Release, error) {
	tokens := github.Static("") // anonymous
	if o.Token != nil {
		tokens = o.Token
	}
	c, err := github.New(github.Options{BaseURL: o.APIURL, HTTP: o.HTTP, Retrier: o.Retrier, Token: tokens})
	if err != nil {
		return nil, err
	}
	var rels []struct {
		Tag        string    `json:"tag_name"`
		Draft      bool      `json:"draft"`
		Prerelease bool      `json:"prerelease"`
		Published  time.Time `json:"published_at"`
	}
	// Newest first; 100 releases reach back years, far past any support window.
	if _, err := c.Do(ctx, http.MethodGet, "/repos/actions/runner/releases?per_page=100", nil, &rels); err != nil {
		if github.StatusOf(err) == http.StatusNotFound {
			return nil, ErrNoReleases
		}
		return nil, fmt.Errorf("reading actions/runner releases: %w", err)
	}
	var out []Release
	for _, r := range rels {
		rv, err := ParseVersion(r.Tag)
		if err != nil || r.Draft || r.Prerelease || r.Published.IsZero() {
			continue
		}
		out = append(out, Release{Version: rv, Published: r.Published})
	}
	return out, nil
}

// Place says where v stands among rels at now.
func Place(v Version, rels []Release, now time.Time) (Freshness, error) {
	if len(rels) == 0 {
		return Freshness{}, errors.New("actions/runner lists no published release")
	}
	f := Freshness{Version: v}
	for i, r := range rels {
		if i == 0 || f.Newest.Less(r.Version) {
			f.Newest, f.NewestAt = r.Version, r.Published
		}
		if v.Less(r.Version) && (f.Superseded.IsZero() || r.Published.Before(f.Superseded)) {
			f.Superseded = r.Published
		}
	}
	if f.Behind() {
		f.RefusedFrom = f.Superseded.Add(SupportWindow)
		f.Refused = !now.Before(f.RefusedFrom)
	}
	return f, nil
}

// versionFacts is what a run learned of its runner's version at start.
type versionFacts struct {
	v        Version
	readErr  error // the installed version could not be read
	f        Freshness
	checkErr error // the releases could not be read
	checked  bool
	token    string // the token the look-up minted, a secret like every other
	now      time.Time
}

func (r *run) checkVersion(ctx context.Context) versionFacts {
	vf := versionFacts{now: r.o.Now()}
	if vf.v, vf.readErr = InstalledVersion(ctx, r.o.RunnerDir); vf.readErr != nil || r.o.SkipVersionCheck {
		return vf
	}
	var tokens TokenFunc
	if r.o.Token != nil {
		tokens = func(ctx context.Context) (string, error) {
			t, err := r.o.Token(ctx)
			vf.token = t
			return t, err
		}
	}
	vf.f, vf.checkErr = CheckVersion(ctx, vf.v, VersionOptions{APIURL: r.o.APIURL, Token: tokens, HTTP: r.o.HTTP, Retrier: r.o.Retrier, Now: r.o.Now})
	vf.checked = vf.checkErr == nil
	return vf
}

func (vf versionFacts) installed() string {
	if vf.readErr != nil {
		return "(version unknown)"
	}
	return vf.v.String()
}

// log records the facts as the runner.version event: a warning when GitHub refuses the version.
func (vf versionFacts) log(lg *slog.Logger) {
	ev := []any{"event", "runner.version", "runner_version", vf.installed()}
	switch {
	case vf.readErr != nil:
		lg.Info("runner version unknown", append(ev, "status", "unknown", "error", vf.readErr.Error())...)
	case vf.checkErr != nil:
		lg.Info("runner version not checked against actions/runner's releases", append(ev, "status", "unchecked", "error", vf.checkErr.Error())...)
	case !vf.checked:
		lg.Info("runner version", append(ev, "status", "unchecked")...)
	case vf.f.Refused:
		lg.Warn(vf.f.Summary(vf.now), append(ev, "status", "refused", "newest", vf.f.Newest.String(), "refused_from", vf.f.RefusedFrom.UTC().Format(time.RFC3339), "fix", vf.f.Fix())...)
	case vf.f.Behind():
		lg.Info(vf.f.Summary(vf.now), append(ev, "status", "behind", "newest", vf.f.Newest.String(), "refused_from", vf.f.RefusedFrom.UTC().Format(time.RFC3339))...)
	default:
		lg.Info(vf.f.Summary(vf.now), append(ev, "status", "current", "newest", vf.f.Newest.String())...)
	}
}
