package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net/http"
	"strings"
	"time"

	"github.com/relaydev/relay/internal/backoff"

	"github.com/google/go-github/v92/github"
)

// GitHubOptions configure the GitHub publisher.
type GitHubOptions struct {
	Repository string // OWNER/NAME
	// BaseURL is a GitHub Enterprise Server API URL (https://HOST/api/v3/); empty: github.com.
	BaseURL string
	// UploadURL is GHES's upload URL; empty: derived from BaseURL by go-github.
	UploadURL string
	Token     string
	// Replace swaps an asset whose content differs instead of failing.
	Replace bool
	// MaxAssetSize is the per-asset limit checked before any upload: GitHub's 2 GiB unless
	// a GitHub Enterprise Server sets another.
	MaxAssetSize int64
	Transport    http.RoundTripper
	Logger       *slog.Logger
	// Budget bounds the time retries (5xx, rate limits) may wait in total (default 5 min).
	Budget time.Duration
	Sleep  func(ctx context.Context, d time.Duration) error
	Rand   *rand.Rand
}

// GitHub publishes to a GitHub release, idempotently: it finds the release for the tag or
// creates it as a draft, uploads what is missing, skips what is there with the same
// checksum, and publishes only when every asset is present. Any number of re-runs, after a
// crash at any point, converge on the same release without duplicates.
type GitHub struct {
	o           GitHubOptions
	owner, repo string
	c           *github.Client
	spent       time.Duration
	// sums caches the sha256 of assets downloaded to compare them (an asset's content never
	// changes under its id), so Prepare's check and Publish do not download twice.
	sums map[int64]string
	// prepared is the release Prepare found or created, which Publish then fills.
	prepared *github.RepositoryRelease
}

// Suffixes of the assets a replacement uses while it swaps (recognised after a crash).
const (
	newSuffix = ".relay-new"
	oldSuffix = ".relay-old"
)

// NewGitHub validates the options.
func NewGitHub(o GitHubOptions) (*GitHub, error) {
	owner, repo, ok := strings.Cut(o.Repository, "/")
	if !ok || owner == "" || repo == "" || strings.Contains(repo, "/") {
		return nil, fmt.Errorf("release.github.repository %q is not OWNER/NAME", o.Repository)
	}
	if o.Token == "" {
		return nil, errors.New("publishing a GitHub release needs a token: set GITHUB_TOKEN (with contents: write)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Budget <= 0 {
		o.Budget = 5 * time.Minute
	}
	if o.MaxAssetSize <= 0 {
		o.MaxAssetSize = MaxAssetSize
	}
	if o.Sleep == nil {
		o.Sleep = backoff.Sleep
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewSource(time.Now().UnixNano()))
	}
	// go-github's own rate-limit bookkeeping would refuse requests locally; relay's call loop
	// already waits what Retry-After and X-RateLimit-Reset say, and stays within its budget.
	opts := []github.ClientOptionsFunc{github.WithAuthToken(o.Token), github.WithUserAgent("relay"), github.WithDisableRateLimitCheck()}
	if o.Transport != nil {
		opts = append(opts, github.WithTransport(o.Transport))
	}
	if o.BaseURL != "" {
		up := o.UploadURL
		if up == "" {
			up = o.BaseURL
		}
		opts = append(opts, github.WithEnterpriseURLs(o.BaseURL, up))
	}
	c, err := github.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("GitHub client: %w", err)
	}
	return &GitHub{o: o, owner: owner, repo: repo, c: c}, nil
}

// Name implements Publisher.
func (g *GitHub) Name() string { return "github" }

// Prepare implements Publisher. It finds the tag's release or creates it as a draft (a
// draft is invisible to users), so the token's contents: write is proven before any image
// tag is applied; on a published release it fails now on an asset this run would have to
// change without --replace, instead of after the tags went public.
func (g *GitHub) Prepare(ctx context.Context, r Release) error {
	rel, err := g.prepare(ctx, r)
	g.prepared = rel
	return err
}

func (g *GitHub) prepare(ctx context.Context, r Release) (*github.RepositoryRelease, error) {
	if err := validateAssets(r.Assets, g.o.MaxAssetSize); err != nil {
		return nil, err
	}
	rel, err := g.findRelease(ctx, r.Tag)
	if err != nil {
		return nil, err
	}
	if rel == nil {
		err = g.call(ctx, "creating the draft release "+r.Tag, "contents: write", func() (*github.Response, error) {
			var resp *github.Response
			var err error
			rel, resp, err = g.c.Repositories.CreateRelease(ctx, g.owner, g.repo, github.CreateReleaseRequest{
				TagName: r.Tag, Name: github.Ptr(r.Name), Body: github.Ptr(r.Notes), Draft: github.Ptr(true),
			})
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		g.o.Logger.Info("draft release created", "repository", g.o.Repository, "tag", r.Tag, "id", rel.ID)
		return rel, nil
	}
	if rel.Draft {
		// Also when the notes are unchanged: the write proves the token may still write.
		err = g.call(ctx, "updating the draft's notes", "contents: write", func() (*github.Response, error) {
			_, resp, err := g.c.Repositories.UpdateRelease(ctx, g.owner, g.repo, rel.ID, github.UpdateReleaseRequest{Body: github.Ptr(r.Notes)})
			return resp, err
		})
		return rel, err
	}
	// Published: it changes only with --replace, and only where content differs.
	have, err := g.assets(ctx, rel.ID)
	if err != nil {
		return nil, err
	}
	writes := false
	for _, a := range r.Assets {
		cur := have[a.Name]
		if cur == nil || cur.GetState() != "uploaded" {
			writes = true
			continue
		}
		same, got, err := g.sameContent(ctx, cur, a)
		if err != nil {
			return nil, err
		}
		if !same && !g.o.Replace {
			return nil, conflictError(rel.TagName, a.Name, got, a.SHA256())
		}
		writes = writes || !same
	}
	if writes {
		err = g.call(ctx, "checking write access to the release "+r.Tag, "contents: write", func() (*github.Response, error) {
			_, resp, err := g.c.Repositories.UpdateRelease(ctx, g.owner, g.repo, rel.ID, github.UpdateReleaseRequest{Body: github.Ptr(rel.GetBody())})
			return resp, err
		})
	}
	return rel, err
}

// ConflictError is a published release holding an asset this run would change.
type ConflictError struct{ Tag, Asset, Have, Want string }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("published release %s already has an asset %s with sha256 %s, and this run made one with sha256 %s: pass --replace to swap it, or release under a new tag", e.Tag, e.Asset, e.Have, e.Want)
}

// PermanentInput marks the conflict as one a plain retry cannot resolve (the CLI exits 2).
func (e *ConflictError) PermanentInput() bool { return true }

func conflictError(tag, asset, got, want string) error {
	return &ConflictError{Tag: tag, Asset: asset, Have: got, Want: want}
}

// Publish implements Publisher.
func (g *GitHub) Publish(ctx context.Context, r Release) (*Result, error) {
	rel := g.prepared
	if rel == nil || rel.TagName != r.Tag {
		var err error
		if rel, err = g.prepare(ctx, r); err != nil {
			return nil, err
		}
	} else if err := validateAssets(r.Assets, g.o.MaxAssetSize); err != nil {
		return nil, err
	}
	if !rel.Draft && rel.Immutable != nil && *rel.Immutable {
		g.o.Logger.Info("release is published and immutable: assets can only be checked", "tag", r.Tag)
	}
	res := &Result{URL: rel.HTMLURL}
	// One listing, kept up to date as assets change: re-listing per asset would cost a
	// release with many assets pages of API calls (and rate limit) for nothing.
	have, err := g.assets(ctx, rel.ID)
	if err != nil {
		return nil, err
	}
	for _, a := range r.Assets {
		wrote, err := g.ensureAsset(ctx, rel, have, a)
		if err != nil {
			return res, err
		}
		if wrote {
			res.Written = append(res.Written, a.Name)
		} else {
			res.Skipped = append(res.Skipped, a.Name)
		}
	}
	if rel.Draft {
		// The commit point: only a release whose every asset is in place goes public.
		have, err := g.assets(ctx, rel.ID)
		if err != nil {
			return res, err
		}
		for _, a := range r.Assets {
			cur := have[a.Name]
			if cur == nil || cur.GetState() != "uploaded" || cur.GetSize() != len(a.Data) {
				return res, fmt.Errorf("asset %s is not complete on the draft release; not publishing (re-run to finish)", a.Name)
			}
		}
		err = g.call(ctx, "publishing the release "+r.Tag, "contents: write", func() (*github.Response, error) {
			var resp *github.Response
			var err error
			rel, resp, err = g.c.Repositories.UpdateRelease(ctx, g.owner, g.repo, rel.ID, github.UpdateReleaseRequest{Draft: github.Ptr(false)})
			return resp, err
		})
		if err != nil {
			return res, err
		}
		res.URL = rel.HTMLURL
		g.o.Logger.Info("release published", "repository", g.o.Repository, "tag", r.Tag, "url", rel.HTMLURL)
	}
	g.o.Logger.Info("release assets", "written", len(res.Written), "unchanged", len(res.Skipped))
	return res, nil
}

// findRelease lists the releases (drafts have no by-tag lookup) and picks the tag's.
func (g *GitHub) findRelease(ctx context.Context, tag string) (*github.RepositoryRelease, error) {
	opt := &github.ListOptions{PerPage: 100}
	for {
		var page []*github.RepositoryRelease
		var resp *github.Response
		err := g.call(ctx, "listing releases", "contents: read", func() (*github.Response, error) {
			var err error
			page, resp, err = g.c.Repositories.ListReleases(ctx, g.owner, g.repo, opt)
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, rel := range page {
			if rel.TagName == tag {
				return rel, nil
			}
		}
		if resp == nil || resp.NextPage == 0 {
			return nil, nil
		}
		opt.Page = resp.NextPage
	}
}

// assets lists a release's assets by name, every page.
func (g *GitHub) assets(ctx context.Context, id int64) (map[string]*github.ReleaseAsset, error) {
	out := map[string]*github.ReleaseAsset{}
	opt := &github.ListOptions{PerPage: 100}
	for {
		var page []*github.ReleaseAsset
		var resp *github.Response
		err := g.call(ctx, "listing release assets", "contents: read", func() (*github.Response, error) {
			var err error
			page, resp, err = g.c.Repositories.ListReleaseAssets(ctx, g.owner, g.repo, id, opt)
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, a := range page {
			out[a.GetName()] = a
		}
		if resp == nil || resp.NextPage == 0 {
			return out, nil
		}
		opt.Page = resp.NextPage
	}
}

// ensureAsset makes the release hold a with its content, finishing a swap an earlier run
// left half done. It reports whether it wrote anything.
func (g *GitHub) ensureAsset(ctx context.Context, rel *github.RepositoryRelease, have map[string]*github.ReleaseAsset, a Asset) (bool, error) {
	want := a.SHA256()
	cur, tmp, old := have[a.Name], have[a.Name+newSuffix], have[a.Name+oldSuffix]
	if cur != nil && cur.GetState() != "uploaded" { // an upload that died half-way
		if err := g.deleteAsset(ctx, have, cur); err != nil {
			return false, err
		}
		cur = nil
	}
	if cur == nil && tmp != nil {
		// A swap stopped after moving the old asset away: finish it.
		if same, _, err := g.sameContent(ctx, tmp, a); err != nil {
			return false, err
		} else if same {
			if err := g.rename(ctx, have, tmp, a.Name); err != nil {
				return false, err
			}
			if old != nil {
				return true, g.deleteAsset(ctx, have, old)
			}
			return true, nil
		}
		if err := g.deleteAsset(ctx, have, tmp); err != nil {
			return false, err
		}
		tmp = nil
	}
	if cur == nil {
		if err := g.upload(ctx, rel, have, a.Name, a.Data); err != nil {
			return false, err
		}
		if old != nil {
			return true, g.deleteAsset(ctx, have, old)
		}
		return true, nil
	}
	same, got, err := g.sameContent(ctx, cur, a)
	if err != nil {
		return false, err
	}
	if same {
		if old != nil { // a finished swap whose clean-up did not run
			return false, g.deleteAsset(ctx, have, old)
		}
		return false, nil
	}
	// A draft is not public yet: what an interrupted run left there (release.json of
	// another invocation, a bundle signed again) is replaced without --replace.
	if !g.o.Replace && !rel.Draft {
		return false, conflictError(rel.TagName, a.Name, got, want)
	}
	// Swap: the new content goes up under a temporary name first, so it exists before the
	// old one is moved away; GitHub allows one asset per name, so the rename pair is the
	// only moment the name is free, and a re-run completes it.
	if tmp != nil { // left by an earlier swap: usable only if it holds this run's content
		if same, _, err := g.sameContent(ctx, tmp, a); err != nil {
			return false, err
		} else if !same || tmp.GetState() != "uploaded" {
			if err := g.deleteAsset(ctx, have, tmp); err != nil {
				return false, err
			}
			tmp = nil
		}
	}
	if tmp == nil {
		if err := g.upload(ctx, rel, have, a.Name+newSuffix, a.Data); err != nil {
			return false, err
		}
		tmp = have[a.Name+newSuffix]
	}
	if old != nil {
		if err := g.deleteAsset(ctx, have, old); err != nil {
			return false, err
		}
	}
	if err := g.rename(ctx, have, cur, a.Name+oldSuffix); err != nil {
		return false, err
	}
	if err := g.rename(ctx, have, tmp, a.Name); err != nil {
		return false, err
	}
	g.o.Logger.Info("release asset replaced", "asset", a.Name, "old_sha256", got, "new_sha256", want, "draft", rel.Draft)
	return true, g.deleteAsset(ctx, have, cur)
}

// sameContent compares an uploaded asset with a: by GitHub's digest when it reports one,
// else by size and then by downloading it.
func (g *GitHub) sameContent(ctx context.Context, cur *github.ReleaseAsset, a Asset) (bool, string, error) {
	want := a.SHA256()
	if d := cur.GetDigest(); strings.HasPrefix(d, "sha256:") {
		got := strings.TrimPrefix(d, "sha256:")
		return got == want, got, nil
	}
	if got, ok := g.sums[cur.GetID()]; ok {
		return got == want, got, nil
	}
	var body []byte
	err := g.call(ctx, "downloading asset "+cur.GetName(), "contents: read", func() (*github.Response, error) {
		rc, _, err := g.c.Repositories.DownloadReleaseAsset(ctx, g.owner, g.repo, cur.GetID(), &http.Client{Transport: g.o.Transport})
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		body, err = io.ReadAll(io.LimitReader(rc, MaxAssetSize+1))
		return nil, err
	})
	if err != nil {
		return false, "", err
	}
	s := sha256.Sum256(body)
	got := hex.EncodeToString(s[:])
	if g.sums == nil {
		g.sums = map[int64]string{}
	}
	g.sums[cur.GetID()] = got
	return got == want, got, nil
}

// upload sends one asset. A failed upload may still have landed (a 504 after the bytes
// arrived, a 422 already_exists after a lost response), so every failure is followed by a
// read-back: a complete asset with the right content is success, a partial one is deleted.
func (g *GitHub) upload(ctx context.Context, rel *github.RepositoryRelease, have map[string]*github.ReleaseAsset, name string, data []byte) error {
	for attempt := 1; ; attempt++ {
		// The body is not rewindable on purpose: this loop, not the transport, retries.
		up, resp, err := g.c.Repositories.UploadReleaseAssetFromRelease(ctx, rel, &github.UploadOptions{Name: name, MediaType: "application/octet-stream"},
			io.NopCloser(bytes.NewReader(data)), int64(len(data)))
		if err == nil {
			g.o.Logger.Info("release asset uploaded", "asset", name, "bytes", len(data))
			have[name] = up
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if perm := permissionError(err, resp, "uploading "+name, "contents: write", g.o.Repository); perm != nil {
			return perm
		}
		now, lerr := g.assets(ctx, rel.ID)
		if lerr != nil {
			return lerr
		}
		if cur := now[name]; cur != nil {
			if same, _, serr := g.sameContent(ctx, cur, Asset{Name: name, Data: data}); serr == nil && same && cur.GetState() == "uploaded" {
				g.o.Logger.Info("release asset landed despite the error", "asset", name, "error", err.Error())
				have[name] = cur
				return nil
			}
			if derr := g.deleteAsset(ctx, now, cur); derr != nil {
				return derr
			}
		}
		if !transient(err, resp) {
			return fmt.Errorf("uploading release asset %s: %w", name, err)
		}
		if werr := g.wait(ctx, attempt, err, resp); werr != nil {
			return fmt.Errorf("uploading release asset %s: %w", name, werr)
		}
	}
}

func (g *GitHub) rename(ctx context.Context, have map[string]*github.ReleaseAsset, a *github.ReleaseAsset, to string) error {
	from := a.GetName()
	err := g.call(ctx, "renaming asset "+from+" to "+to, "contents: write", func() (*github.Response, error) {
		_, resp, err := g.c.Repositories.UpdateReleaseAsset(ctx, g.owner, g.repo, a.GetID(), github.UpdateReleaseAssetRequest{Name: github.Ptr(to)})
		return resp, err
	})
	if err == nil {
		delete(have, from)
		a.Name = github.Ptr(to)
		have[to] = a
	}
	return err
}

func (g *GitHub) deleteAsset(ctx context.Context, have map[string]*github.ReleaseAsset, a *github.ReleaseAsset) error {
	err := g.call(ctx, "deleting asset "+a.GetName(), "contents: write", func() (*github.Response, error) {
		resp, err := g.c.Repositories.DeleteReleaseAsset(ctx, g.owner, g.repo, a.GetID())
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return resp, nil // already gone: what we wanted
		}
		return resp, err
	})
	if err == nil && have[a.GetName()] == a {
		delete(have, a.GetName())
	}
	return err
}

// UploadAttestation stores a Sigstore bundle with GitHub's attestations API, where
// `gh attestation verify` finds it. The token needs attestations: write.
func (g *GitHub) UploadAttestation(ctx context.Context, bundle []byte) (int64, error) {
	if !json.Valid(bundle) {
		return 0, errors.New("attestation bundle is not JSON")
	}
	var out struct {
		ID int64 `json:"id"`
	}
	err := g.call(ctx, "uploading an attestation", "attestations: write", func() (*github.Response, error) {
		req, err := g.c.NewRequest(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/attestations", g.owner, g.repo), map[string]json.RawMessage{"bundle": bundle})
		if err != nil {
			return nil, err
		}
		return g.c.Do(req, &out)
	})
	return out.ID, err
}

// call runs one API call, retrying 5xx, rate limits and network errors with backoff (and
// Retry-After) within the budget; a refusal names the permission the token lacks.
func (g *GitHub) call(ctx context.Context, what, permission string, fn func() (*github.Response, error)) error {
	for attempt := 1; ; attempt++ {
		resp, err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if perm := permissionError(err, resp, what, permission, g.o.Repository); perm != nil {
			return perm
		}
		if !transient(err, resp) {
			return fmt.Errorf("GitHub: %s: %w", what, err)
		}
		if werr := g.wait(ctx, attempt, err, resp); werr != nil {
			return fmt.Errorf("GitHub: %s: %w", what, werr)
		}
	}
}

func (g *GitHub) wait(ctx context.Context, attempt int, err error, resp *github.Response) error {
	d := time.Duration(0)
	var abuse *github.AbuseRateLimitError
	var rl *github.RateLimitError
	switch {
	case errors.As(err, &abuse) && abuse.RetryAfter != nil:
		d = *abuse.RetryAfter
	case errors.As(err, &abuse):
		d = time.Minute
	case errors.As(err, &rl):
		d = time.Until(rl.Rate.Reset.Time)
	case resp != nil && resp.Header.Get("Retry-After") != "":
		var s int
		fmt.Sscanf(resp.Header.Get("Retry-After"), "%d", &s)
		d = time.Duration(s) * time.Second
	}
	if d <= 0 {
		d = backoff.Equal(g.o.Rand, time.Second, attempt)
	}
	if g.spent+d > g.o.Budget {
		return fmt.Errorf("GitHub kept failing past the retry budget of %s: %w", g.o.Budget, err)
	}
	g.spent += d
	g.o.Logger.Warn("GitHub request failed, retrying", "attempt", attempt, "reason", err.Error(), "wait_ms", d.Milliseconds())
	return g.o.Sleep(ctx, d)
}

// transient says whether waiting may help: 5xx, rate limits, network errors.
func transient(err error, resp *github.Response) bool {
	var abuse *github.AbuseRateLimitError
	var rl *github.RateLimitError
	if errors.As(err, &abuse) || errors.As(err, &rl) {
		return true
	}
	if resp != nil && resp.Response != nil {
		return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
	}
	var er *github.ErrorResponse
	return !errors.As(err, &er) // no response at all: the network
}

// permissionError turns a 401, 403 or 404 (GitHub hides what a token may not see) into an
// error that names the permission.
func permissionError(err error, resp *github.Response, what, permission, repo string) error {
	var abuse *github.AbuseRateLimitError
	var rl *github.RateLimitError
	if errors.As(err, &abuse) || errors.As(err, &rl) || resp == nil || resp.Response == nil {
		return nil
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return fmt.Errorf("GitHub: %s: the token was refused (401): check GITHUB_TOKEN", what)
	case http.StatusForbidden, http.StatusNotFound:
		return fmt.Errorf("GitHub: %s on %s: %d: the token needs `%s` on the repository (GitHub answers 404 for what a token may not see): %w", what, repo, resp.StatusCode, permission, err)
	}
	return nil
}
