package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/pkg/github"
)

// GitHubOptions configure the GitHub publisher.
type GitHubOptions struct {
	Repository string // OWNER/NAME
	// BaseURL is a GitHub Enterprise Server API URL (https://HOST/api/v3/); empty: github.com.
	BaseURL string
	// UploadURL is GHES's upload URL, for a release that does not name its own; empty:
	// derived from BaseURL.
	UploadURL string
	Token     string
	// Replace swaps an asset whose content differs instead of failing.
	Replace bool
	// MaxAssetSize is the per-asset limit checked before any upload: GitHub's 2 GiB unless
	// a GitHub Enterprise Server sets another.
	MaxAssetSize int64
	// Transport is relay's HTTP chain; Retrier the retry layer in it (nil: one with
	// RetryOptions is added over Transport). It retries 5xx, rate limits and network
	// errors within one budget per host.
	Transport    http.RoundTripper
	Retrier      *httpx.Retrier
	RetryOptions httpx.RetryOptions
	Logger       *slog.Logger
}

// GitHub publishes to a GitHub release, idempotently: it finds the release for the tag or
// creates it as a draft, uploads what is missing, skips what is there with the same
// checksum, and publishes only when every asset is present. Any number of re-runs, after a
// crash at any point, converge on the same release without duplicates.
type GitHub struct {
	o           GitHubOptions
	owner, repo string
	c           *github.Client
	// sums caches the sha256 of assets downloaded to compare them (an asset's content never
	// changes under its id), so Prepare's check and Publish do not download twice.
	sums map[int64]string
	// prepared is the release Prepare found or created, which Publish then fills.
	prepared *ghRelease
}

// ghRelease and ghAsset are the fields of GitHub's release and asset objects relay reads.
type ghRelease struct {
	ID        int64  `json:"id"`
	TagName   string `json:"tag_name"`
	Body      string `json:"body"`
	Draft     bool   `json:"draft"`
	Immutable bool   `json:"immutable"`
	HTMLURL   string `json:"html_url"`
	UploadURL string `json:"upload_url"`
}

type ghAsset struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	State  string `json:"state"`
	Size   int    `json:"size"`
	Digest string `json:"digest"` // "sha256:…" on assets uploaded since 2025
	URL    string `json:"url"`
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
	if o.MaxAssetSize <= 0 {
		o.MaxAssetSize = MaxAssetSize
	}
	if o.RetryOptions.Logger == nil {
		o.RetryOptions.Logger = o.Logger
	}
	hc, r := httpx.Retrying(&http.Client{Transport: o.Transport}, o.Retrier, o.RetryOptions)
	c, err := github.New(github.Options{BaseURL: o.BaseURL, UploadURL: o.UploadURL, Token: github.Static(o.Token), HTTP: hc, Retrier: r})
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

func (g *GitHub) prepare(ctx context.Context, r Release) (*ghRelease, error) {
	if err := validateAssets(r.Assets, g.o.MaxAssetSize); err != nil {
		return nil, err
	}
	rel, err := g.findRelease(ctx, r.Tag)
	if err != nil {
		return nil, err
	}
	if rel == nil {
		rel = &ghRelease{}
		_, err = g.call(ctx, "creating the draft release "+r.Tag, "contents: write", http.MethodPost, g.path("/releases"),
			map[string]any{"tag_name": r.Tag, "name": r.Name, "body": r.Notes, "draft": true}, rel)
		if err != nil {
			return nil, err
		}
		g.o.Logger.Info("draft release created", "repository", g.o.Repository, "tag", r.Tag, "id", rel.ID)
		return rel, nil
	}
	if rel.Draft {
		// Also when the notes are unchanged: the write proves the token may still write.
		_, err = g.call(ctx, "updating the draft's notes", "contents: write", http.MethodPatch, g.path("/releases/%d", rel.ID), map[string]any{"body": r.Notes}, nil)
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
		if cur == nil || cur.State != "uploaded" {
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
		_, err = g.call(ctx, "checking write access to the release "+r.Tag, "contents: write", http.MethodPatch, g.path("/releases/%d", rel.ID), map[string]any{"body": rel.Body}, nil)
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
	if !rel.Draft && rel.Immutable {
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
			if cur == nil || cur.State != "uploaded" || cur.Size != len(a.Data) {
				return res, fmt.Errorf("asset %s is not complete on the draft release; not publishing (re-run to finish)", a.Name)
			}
		}
		published := &ghRelease{}
		_, err = g.call(ctx, "publishing the release "+r.Tag, "contents: write", http.MethodPatch, g.path("/releases/%d", rel.ID), map[string]any{"draft": false}, published)
		if err != nil {
			return res, err
		}
		rel = published
		res.URL = rel.HTMLURL
		g.o.Logger.Info("release published", "repository", g.o.Repository, "tag", r.Tag, "url", rel.HTMLURL)
	}
	g.o.Logger.Info("release assets", "written", len(res.Written), "unchanged", len(res.Skipped))
	return res, nil
}

// findRelease lists the releases (drafts have no by-tag lookup) and picks the tag's.
func (g *GitHub) findRelease(ctx context.Context, tag string) (*ghRelease, error) {
	for next := g.path("/releases?per_page=100"); next != ""; {
		var page []*ghRelease
		resp, err := g.call(ctx, "listing releases", "contents: read", http.MethodGet, next, nil, &page)
		if err != nil {
			return nil, err
		}
		for _, rel := range page {
			if rel.TagName == tag {
				return rel, nil
			}
		}
		next = resp.Next
	}
	return nil, nil
}

// assets lists a release's assets by name, every page.
func (g *GitHub) assets(ctx context.Context, id int64) (map[string]*ghAsset, error) {
	out := map[string]*ghAsset{}
	for next := g.path("/releases/%d/assets?per_page=100", id); next != ""; {
		var page []*ghAsset
		resp, err := g.call(ctx, "listing release assets", "contents: read", http.MethodGet, next, nil, &page)
		if err != nil {
			return nil, err
		}
		for _, a := range page {
			out[a.Name] = a
		}
		next = resp.Next
	}
	return out, nil
}

// ensureAsset makes the release hold a with its content, finishing a swap an earlier run
// left half done. It reports whether it wrote anything.
func (g *GitHub) ensureAsset(ctx context.Context, rel *ghRelease, have map[string]*ghAsset, a Asset) (bool, error) {
	want := a.SHA256()
	cur, tmp, old := have[a.Name], have[a.Name+newSuffix], have[a.Name+oldSuffix]
	if cur != nil && cur.State != "uploaded" { // an upload that died half-way
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
		} else if !same || tmp.State != "uploaded" {
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
// else by downloading it.
func (g *GitHub) sameContent(ctx context.Context, cur *ghAsset, a Asset) (bool, string, error) {
	want := a.SHA256()
	if d := cur.Digest; strings.HasPrefix(d, "sha256:") {
		got := strings.TrimPrefix(d, "sha256:")
		return got == want, got, nil
	}
	if got, ok := g.sums[cur.ID]; ok {
		return got == want, got, nil
	}
	u := cur.URL
	if u == "" {
		u = g.path("/releases/assets/%d", cur.ID)
	}
	body, err := g.c.Download(ctx, u, MaxAssetSize)
	if err != nil {
		return false, "", g.explain(err, "downloading asset "+cur.Name, "contents: read")
	}
	s := sha256.Sum256(body)
	got := hex.EncodeToString(s[:])
	if g.sums == nil {
		g.sums = map[int64]string{}
	}
	g.sums[cur.ID] = got
	return got == want, got, nil
}

// upload sends one asset. The retry layer resends it after a 5xx, so a failed upload may
// still have landed (a 504 after the bytes arrived, then a 422 already_exists): every
// failure is followed by a read-back, where a complete asset with the right content is
// success and a partial one is deleted and, if the failure was worth waiting on, sent
// again after a wait charged to the uploads host's budget.
func (g *GitHub) upload(ctx context.Context, rel *ghRelease, have map[string]*ghAsset, name string, data []byte) error {
	what := "uploading " + name
	for attempt := 1; ; attempt++ {
		up := &ghAsset{}
		_, err := g.c.Upload(ctx, rel.UploadURL, g.path("/releases/%d/assets", rel.ID), name, "application/octet-stream", data, up)
		if err == nil {
			g.o.Logger.Info("release asset uploaded", "asset", name, "bytes", len(data))
			have[name] = up
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if perm := permissionError(err, what, "contents: write", g.o.Repository); perm != nil {
			return perm
		}
		now, lerr := g.assets(ctx, rel.ID)
		if lerr != nil {
			return lerr
		}
		partial := false
		if cur := now[name]; cur != nil {
			if same, _, serr := g.sameContent(ctx, cur, Asset{Name: name, Data: data}); serr == nil && same && cur.State == "uploaded" {
				g.o.Logger.Info("release asset landed despite the error", "asset", name, "error", err.Error())
				have[name] = cur
				return nil
			}
			if derr := g.deleteAsset(ctx, now, cur); derr != nil {
				return derr
			}
			partial = true
		}
		var ge *github.Error
		if httpx.Retried(err) || !partial && errors.As(err, &ge) || attempt >= g.c.Retrier().MaxAttempts(uploadHost(rel.UploadURL, g.c)) {
			return fmt.Errorf("uploading release asset %s: %w", name, err)
		}
		// A network error the transport could not replay, or a partial asset now gone.
		if werr := g.c.Retrier().Wait(ctx, uploadHost(rel.UploadURL, g.c), attempt, nil, err.Error()); werr != nil {
			return fmt.Errorf("uploading release asset %s: %w", name, werr)
		}
	}
}

func uploadHost(uploadURL string, c *github.Client) string {
	if u, err := url.Parse(uploadURL); err == nil && u.Host != "" {
		return u.Host
	}
	u, _ := url.Parse(c.BaseURL())
	return u.Host
}

func (g *GitHub) rename(ctx context.Context, have map[string]*ghAsset, a *ghAsset, to string) error {
	from := a.Name
	_, err := g.call(ctx, "renaming asset "+from+" to "+to, "contents: write", http.MethodPatch, g.path("/releases/assets/%d", a.ID), map[string]any{"name": to}, nil)
	if err == nil {
		delete(have, from)
		a.Name = to
		have[to] = a
	}
	return err
}

func (g *GitHub) deleteAsset(ctx context.Context, have map[string]*ghAsset, a *ghAsset) error {
	_, err := g.c.Do(ctx, http.MethodDelete, g.path("/releases/assets/%d", a.ID), nil, nil)
	if github.StatusOf(err) == http.StatusNotFound {
		err = nil // already gone: what we wanted
	}
	if err != nil {
		return g.explain(err, "deleting asset "+a.Name, "contents: write")
	}
	if have[a.Name] == a {
		delete(have, a.Name)
	}
	return nil
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
	_, err := g.call(ctx, "uploading an attestation", "attestations: write", http.MethodPost, g.path("/attestations"), map[string]json.RawMessage{"bundle": bundle}, &out)
	return out.ID, err
}

// path is a path under the repository's API root.
func (g *GitHub) path(format string, args ...any) string {
	return "repos/" + url.PathEscape(g.owner) + "/" + url.PathEscape(g.repo) + fmt.Sprintf(format, args...)
}

// call runs one API call (the retry layer under it waits out 5xx, rate limits and network
// errors within the host's budget); a refusal names the permission the token lacks.
func (g *GitHub) call(ctx context.Context, what, permission, method, path string, in, out any) (*github.Response, error) {
	resp, err := g.c.Do(ctx, method, path, in, out)
	if err != nil {
		return nil, g.explain(err, what, permission)
	}
	return resp, nil
}

func (g *GitHub) explain(err error, what, permission string) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if perm := permissionError(err, what, permission, g.o.Repository); perm != nil {
		return perm
	}
	return fmt.Errorf("GitHub: %s: %w", what, err)
}

// permissionError turns a 401, 403 or 404 (GitHub hides what a token may not see) into an
// error that names the permission.
func permissionError(err error, what, permission, repo string) error {
	var ge *github.Error
	if !errors.As(err, &ge) || ge.RateLimited {
		return nil
	}
	switch ge.Status {
	case http.StatusUnauthorized:
		return fmt.Errorf("GitHub: %s: the token was refused (401): check GITHUB_TOKEN", what)
	case http.StatusForbidden, http.StatusNotFound:
		return fmt.Errorf("GitHub: %s on %s: %d: the token needs `%s` on the repository (GitHub answers 404 for what a token may not see): %w", what, repo, ge.Status, permission, err)
	}
	return nil
}
