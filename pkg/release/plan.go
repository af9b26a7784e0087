package release

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Actions a planned release takes on an asset.
const (
	AssetUpload    = "upload"    // new on the release
	AssetReplace   = "replace"   // there with other content (a draft's, or published with --replace)
	AssetUnchanged = "unchanged" // there with the same content: no write
)

// PlannedAsset is what publishing would do with one asset.
type PlannedAsset struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Action string `json:"action"`
}

// Plan is what publishing a release would write, found without writing anything.
type Plan struct {
	Target string `json:"target"`
	// Release is what happens to the release itself: "create" (a draft, then published),
	// "publish-draft" (an earlier run's draft), "update" (published already) or "write"
	// (a directory).
	Release string         `json:"release"`
	Where   string         `json:"where"`
	Assets  []PlannedAsset `json:"assets"`
	// Notes on what could not be told without a write.
	Notes []string `json:"notes,omitempty"`
}

// Writes counts the assets the plan uploads or replaces.
func (p *Plan) Writes() int {
	n := 0
	for _, a := range p.Assets {
		if a.Action != AssetUnchanged {
			n++
		}
	}
	return n
}

// Planner finds what publishing r would write, checking everything Prepare would, read-only.
type Planner interface {
	Plan(ctx context.Context, r Release) (*Plan, error)
}

// Plan implements Planner: the directory could be made or written, and each asset is new,
// changed or already there.
func (d *Dir) Plan(ctx context.Context, r Release) (*Plan, error) {
	if err := validateAssets(r.Assets, MaxAssetSize); err != nil {
		return nil, err
	}
	if _, err := d.Check(ctx); err != nil {
		return nil, err
	}
	p := &Plan{Target: "dir", Release: "write", Where: d.path}
	for _, a := range r.Assets {
		pa := PlannedAsset{Name: a.Name, Size: int64(len(a.Data)), SHA256: a.SHA256(), Action: AssetUpload}
		if old, err := os.ReadFile(filepath.Join(d.path, a.Name)); err == nil {
			pa.Action = AssetReplace
			if bytes.Equal(old, a.Data) {
				pa.Action = AssetUnchanged
			}
		}
		p.Assets = append(p.Assets, pa)
	}
	return p, nil
}

// Plan implements Planner with reads only: the token's rights on the repository (where
// GitHub reports them), the release for the tag and its assets. It fails where Prepare
// would: an asset over the size limit or badly named, a token that may not write, a
// published asset this run would change without --replace.
func (g *GitHub) Plan(ctx context.Context, r Release) (*Plan, error) {
	if err := validateAssets(r.Assets, g.o.MaxAssetSize); err != nil {
		return nil, err
	}
	p := &Plan{Target: "github", Where: g.o.Repository}
	if err := g.checkWrite(ctx, p); err != nil {
		return nil, err
	}
	rel, err := g.findRelease(ctx, r.Tag)
	if err != nil {
		return nil, err
	}
	have := map[string]*ghAsset{}
	switch {
	case rel == nil:
		p.Release = "create"
	case rel.Draft:
		p.Release = "publish-draft"
	default:
		p.Release = "update"
	}
	if rel != nil {
		p.Where = rel.HTMLURL
		if have, err = g.assets(ctx, rel.ID); err != nil {
			return nil, err
		}
	}
	for _, a := range r.Assets {
		pa := PlannedAsset{Name: a.Name, Size: int64(len(a.Data)), SHA256: a.SHA256(), Action: AssetUpload}
		if cur := have[a.Name]; cur != nil && cur.State == "uploaded" {
			same, got, err := g.sameContent(ctx, cur, a)
			if err != nil {
				return nil, err
			}
			switch {
			case same:
				pa.Action = AssetUnchanged
			case !rel.Draft && !g.o.Replace:
				return nil, conflictError(rel.TagName, a.Name, got, a.SHA256())
			default:
				pa.Action = AssetReplace
			}
		}
		p.Assets = append(p.Assets, pa)
	}
	return p, nil
}

// checkWrite reads the token's rights on the repository from GitHub: a user's token (and a
// fine-grained one) gets them in the repository's permissions; an Actions or App
// installation token gets none, and only a write could tell (noted in the plan).
func (g *GitHub) checkWrite(ctx context.Context, p *Plan) error {
	var repo struct {
		Permissions *struct {
			Admin, Maintain, Push, Triage, Pull bool
		} `json:"permissions"`
	}
	if _, err := g.call(ctx, "reading the repository "+g.o.Repository, "metadata: read", http.MethodGet, g.path(""), nil, &repo); err != nil {
		return err
	}
	perms := repo.Permissions
	if perms == nil {
		p.Notes = append(p.Notes, "GitHub does not report this token's rights on "+g.o.Repository+" (an Actions or App installation token): contents: write shows when the release step runs")
		return nil
	}
	if !perms.Push {
		var have []string
		for k, v := range map[string]bool{"admin": perms.Admin, "maintain": perms.Maintain, "push": perms.Push, "triage": perms.Triage, "pull": perms.Pull} {
			if v {
				have = append(have, k)
			}
		}
		sort.Strings(have)
		return &PermissionError{Repository: g.o.Repository, Have: have}
	}
	return nil
}

// PermissionError is a token GitHub says may not write to the repository.
type PermissionError struct {
	Repository string
	Have       []string
}

func (e *PermissionError) Error() string {
	have := "do nothing"
	if len(e.Have) > 0 {
		have = strings.Join(e.Have, ",")
	}
	return fmt.Sprintf("the GitHub token may %s on %s but not push: a release needs contents: write (workflow `permissions: contents: write`, or a token with write access)", have, e.Repository)
}

// PermanentInput: a retry with the same token fails the same way.
func (e *PermissionError) PermanentInput() bool { return true }

// Recorder is --dry-run's publisher: Prepare plans the release with the target's own
// checks, read-only, and Publish records it; nothing is written.
type Recorder struct {
	target  string
	planner Planner
	plan    *Plan
	atts    []int
}

// NewRecorder records what the target p would publish.
func NewRecorder(target string, p Planner) *Recorder { return &Recorder{target: target, planner: p} }

// Name implements Publisher.
func (r *Recorder) Name() string { return r.target }

// Prepare implements Publisher.
func (r *Recorder) Prepare(ctx context.Context, rel Release) error {
	p, err := r.planner.Plan(ctx, rel)
	if err != nil {
		return err
	}
	r.plan = p
	return nil
}

// Publish implements Publisher: the release as planned (planned again if its assets changed
// since Prepare).
func (r *Recorder) Publish(ctx context.Context, rel Release) (*Result, error) {
	if err := r.Prepare(ctx, rel); err != nil {
		return nil, err
	}
	res := &Result{URL: r.plan.Where}
	for _, a := range r.plan.Assets {
		if a.Action == AssetUnchanged {
			res.Skipped = append(res.Skipped, a.Name)
		} else {
			res.Written = append(res.Written, a.Name)
		}
	}
	return res, nil
}

// UploadAttestation records a bundle GitHub's attestations API would get.
func (r *Recorder) UploadAttestation(ctx context.Context, bundle []byte) (int64, error) {
	r.atts = append(r.atts, len(bundle))
	return int64(-len(r.atts)), nil // never a real id
}

// Check is the target's own read-only check, where it has one (a directory's).
func (r *Recorder) Check(ctx context.Context) (string, error) {
	if c, ok := r.planner.(interface {
		Check(context.Context) (string, error)
	}); ok {
		return c.Check(ctx)
	}
	return "checked when the release is planned", nil
}

// Plan is the recorded plan; nil until the release step prepared one.
func (r *Recorder) Plan() *Plan { return r.plan }

// Attestations are the sizes of the bundles the attestations API would get.
func (r *Recorder) Attestations() []int { return r.atts }
