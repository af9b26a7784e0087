package runner

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/relaydev/relay/internal/httpx"
)

// Check is one finding of relay doctor: ok, warn (works now, will not for long; with the
// fix), fail (with the fix) or skip (with why). Only fail fails the doctor.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Note   string `json:"note,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

// DoctorOptions say what to check.
type DoctorOptions struct {
	Scope  Scope
	APIURL string
	// Token is the runner's credential; Permissions what its installation token carries
	// (nil when unknown, e.g. a personal token). TokenErr is why there is no token.
	Token       TokenFunc
	TokenErr    error
	Permissions map[string]string
	HTTP        *http.Client
	Retrier     *httpx.Retrier // the retry layer HTTP includes; nil: one is added
	Getenv      func(string) string
	// RunnerDir is where an Actions runner may be installed (inside the runner image);
	// Pins are runner versions pinned elsewhere (relay.yaml's actions-runner bases). Each
	// is checked against actions/runner's releases.
	RunnerDir string
	Pins      []Pin
	Now       func() time.Time
}

// Pin is a runner version pinned somewhere: Where names the place.
type Pin struct {
	Where   string
	Version Version
}

// Doctor checks, reading only, what most often breaks a first runner deployment: the
// runner's credential may register runners for the scope, the job queue the autoscaler
// watches is readable, and (inside a workflow) the job may request an OIDC token.
func Doctor(ctx context.Context, d DoctorOptions) []Check {
	var out []Check
	add := func(c Check) { out = append(out, c) }
	o := &Options{Scope: d.Scope, APIURL: strings.TrimRight(d.APIURL, "/"), Token: d.Token, HTTP: d.HTTP, Retrier: d.Retrier}
	if o.APIURL == "" {
		o.APIURL = "https://api.github.com"
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	scopeOK := d.Scope.validate() == nil
	switch {
	case !scopeOK:
		add(Check{Name: "runner scope", Status: "skip", Note: "no --repo, --org or --enterprise given: runner checks skipped"})
	case d.TokenErr != nil:
		add(Check{Name: "runner credential", Status: "fail", Note: d.TokenErr.Error(), Fix: "set RELAY_GITHUB_APP_ID with RELAY_GITHUB_APP_KEY, RELAY_GITHUB_APP_KEY_FILE or RELAY_GITHUB_APP_KEY_VAULT_SECRET (docs/runner.md)"})
	case d.Token == nil:
		add(Check{Name: "runner credential", Status: "fail", Note: "no GitHub App or token to check", Fix: "set RELAY_GITHUB_APP_ID and its key (docs/runner.md); a platform registration token cannot be checked ahead"})
	default:
		a, err := newAPI(o)
		if err == nil {
			_, err = d.Token(ctx)
		}
		if err != nil {
			add(Check{Name: "runner credential", Status: "fail", Note: err.Error(), Fix: "check the App id and key, and that the App is installed on " + d.Scope.String()})
			break
		}
		add(Check{Name: "runner credential", Status: "ok", Note: "token obtained for " + d.Scope.String()})
		want, perm := "administration", "Administration: write (repository permission)"
		if d.Scope.Org != "" {
			want, perm = "organization_self_hosted_runners", "Self-hosted runners: write (organization permission)"
		}
		c := Check{Name: "runner credential may register runners (JIT configs)"}
		if d.Permissions != nil && d.Permissions[want] != "write" && d.Scope.Enterprise == "" {
			c.Status, c.Note, c.Fix = "fail", fmt.Sprintf("the App's token has %s: %q", want, d.Permissions[want]), "give the GitHub App "+perm+" and accept the new permissions on the installation"
		} else if list, err := a.list(ctx, ""); err != nil {
			c.Status, c.Note, c.Fix = "fail", err.Error(), "give the credential "+perm
		} else {
			c.Status, c.Note = "ok", fmt.Sprintf("lists the scope's runners (%d registered)", len(list))
		}
		add(c)
		add(queueCheck(ctx, a, d))
	}
	if d.Getenv != nil {
		switch {
		case d.Getenv("GITHUB_ACTIONS") != "true":
			add(Check{Name: "workflow grants id-token: write", Status: "skip", Note: "not running inside a GitHub Actions job"})
		case d.Getenv("ACTIONS_ID_TOKEN_REQUEST_URL") == "" || d.Getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN") == "":
			add(Check{Name: "workflow grants id-token: write", Status: "fail", Note: "this job cannot request an OIDC token, so keyless signing fails",
				Fix: "add `permissions: id-token: write` (with `contents: write` for releases) to the workflow or the job"})
		default:
			add(Check{Name: "workflow grants id-token: write", Status: "ok", Note: "the job can request an OIDC token"})
		}
	}
	return append(out, versionChecks(ctx, d, o)...)
}

// versionChecks place the installed and pinned runner versions in GitHub's support window.
func versionChecks(ctx context.Context, d DoctorOptions, o *Options) []Check {
	pins := d.Pins
	if d.RunnerDir != "" {
		if v, err := InstalledVersion(ctx, d.RunnerDir); err == nil {
			pins = append([]Pin{{Where: "installed in " + d.RunnerDir, Version: v}}, pins...)
		}
	}
	if len(pins) == 0 {
		where := "no actions-runner base in relay.yaml"
		if d.RunnerDir != "" {
			where = "no Actions runner in " + d.RunnerDir + " and " + where
		}
		return []Check{{Name: "runner version", Status: "skip", Note: where}}
	}
	tokens := d.Token // a working credential raises the rate limit; a broken one is reported above
	if tokens != nil {
		if _, err := tokens(ctx); err != nil {
			tokens = nil
		}
	}
	now := time.Now()
	if d.Now != nil {
		now = d.Now()
	}
	// One look-up for every pin.
	rels, relErr := Releases(ctx, VersionOptions{APIURL: o.APIURL, Token: tokens, HTTP: o.HTTP, Retrier: o.Retrier})
	var out []Check
	for _, p := range pins {
		c := Check{Name: "runner version (" + p.Where + ")"}
		f, err := Freshness{}, relErr
		if err == nil {
			f, err = Place(p.Version, rels, now)
		}
		switch {
		case errors.Is(err, ErrNoReleases):
			c.Status, c.Note = "skip", fmt.Sprintf("runner %s: %v", p.Version, err)
		case err != nil:
			c.Status, c.Note, c.Fix = "warn", fmt.Sprintf("runner %s not checked: %v", p.Version, err), "allow relay to read https://api.github.com/repos/actions/runner/releases, or compare with https://github.com/actions/runner/releases by hand"
		case f.Refused:
			c.Status, c.Note, c.Fix = "fail", f.Summary(now), f.Fix()
		case f.Behind():
			c.Status, c.Note, c.Fix = "warn", f.Summary(now), f.Fix()
		default:
			c.Status, c.Note = "ok", f.Summary(now)
		}
		out = append(out, c)
	}
	return out
}

// queueCheck reads the queued runs the autoscaler (KEDA's github-runner scaler) watches.
func queueCheck(ctx context.Context, a api, d DoctorOptions) Check {
	c := Check{Name: "job queue readable (the autoscaler's view)"}
	if d.Permissions != nil && d.Permissions["actions"] == "" {
		c.Status, c.Note, c.Fix = "fail", "the App's token has no actions permission", "give the GitHub App Actions: read (the KEDA github-runner scaler needs it with the same App)"
		return c
	}
	repo := d.Scope.Repo
	if repo == "" {
		var out struct {
			Repositories []struct {
				FullName string `json:"full_name"`
			} `json:"repositories"`
		}
		err := a.do(ctx, http.MethodGet, "/installation/repositories?per_page=1", nil, &out, http.StatusOK)
		var ae *apiError
		switch {
		case errors.As(err, &ae) && d.Permissions == nil:
			c.Status, c.Note = "skip", "not an App installation token: name a repository with --repo to check its queue"
			return c
		case err != nil:
			c.Status, c.Note, c.Fix = "fail", err.Error(), "install the App on the repositories whose jobs the runners take"
			return c
		case len(out.Repositories) == 0:
			c.Status, c.Note, c.Fix = "fail", "the App's installation covers no repository", "select the repositories whose jobs the runners take on the installation"
			return c
		}
		repo = out.Repositories[0].FullName
	}
	var runs struct {
		Total int `json:"total_count"`
	}
	q := url.Values{"status": {"queued"}, "per_page": {"1"}}
	if err := a.do(ctx, http.MethodGet, "/repos/"+repo+"/actions/runs?"+q.Encode(), nil, &runs, http.StatusOK); err != nil {
		c.Status, c.Note, c.Fix = "fail", err.Error(), "give the credential Actions: read on "+repo
		return c
	}
	c.Status, c.Note = "ok", fmt.Sprintf("%s: %d queued run(s)", repo, runs.Total)
	return c
}
