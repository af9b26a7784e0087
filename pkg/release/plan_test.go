package release

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaydev/relay/internal/testutil"
)

func actions(p *Plan) string {
	var out []string
	for _, a := range p.Assets {
		out = append(out, a.Name+"="+a.Action)
	}
	return p.Release + " " + strings.Join(out, " ")
}

// TestGitHubPlanPredictsPublish: what Plan says Publish will write is what Publish then
// writes, for a new release, an earlier run's draft and a published one; Plan itself only
// reads.
func TestGitHubPlanPredictsPublish(t *testing.T) {
	ctx := context.Background()
	f := testutil.NewGitHub(t)
	onlyReads := func() {
		t.Helper()
		for _, r := range f.Log() {
			if !strings.HasPrefix(r, "GET ") {
				t.Fatalf("Plan wrote: %s", r)
			}
		}
	}
	v1 := Release{Tag: "v1", Name: "v1", Notes: "n", Assets: testAssets(3, "a")}
	p, err := newPublisher(t, f, false, nil).Plan(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	onlyReads()
	if got := actions(p); got != "create asset-0.json=upload asset-1.json=upload asset-2.json=upload" || len(p.Notes) != 1 {
		t.Fatalf("new release: %s %v", got, p.Notes)
	}
	// An earlier run's draft with one asset of this run and one of another content.
	g := newPublisher(t, f, false, nil)
	if err := g.Prepare(ctx, v1); err != nil {
		t.Fatal(err)
	}
	have := map[string]*ghAsset{}
	if err := g.upload(ctx, g.prepared, have, "asset-0.json", v1.Assets[0].Data); err != nil {
		t.Fatal(err)
	}
	if err := g.upload(ctx, g.prepared, have, "asset-1.json", []byte("other")); err != nil {
		t.Fatal(err)
	}
	p, err = newPublisher(t, f, false, nil).Plan(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(p); got != "publish-draft asset-0.json=unchanged asset-1.json=replace asset-2.json=upload" || p.Writes() != 2 {
		t.Fatalf("draft: %s", got)
	}
	res, err := newPublisher(t, f, false, nil).Publish(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Written, ",") != "asset-1.json,asset-2.json" || strings.Join(res.Skipped, ",") != "asset-0.json" {
		t.Fatalf("Publish wrote %v, skipped %v; the plan said %s", res.Written, res.Skipped, actions(p))
	}
	// Published: unchanged assets need nothing, a changed one is a conflict without --replace.
	if p, err = newPublisher(t, f, false, nil).Plan(ctx, v1); err != nil || actions(p) != "update asset-0.json=unchanged asset-1.json=unchanged asset-2.json=unchanged" {
		t.Fatalf("published, unchanged: %v %v", p, err)
	}
	v1b := Release{Tag: "v1", Name: "v1", Assets: testAssets(3, "b")}
	var ce *ConflictError
	if _, err := newPublisher(t, f, false, nil).Plan(ctx, v1b); !errors.As(err, &ce) {
		t.Fatalf("changed published asset: %v", err)
	}
	if p, err = newPublisher(t, f, true, nil).Plan(ctx, v1b); err != nil || p.Writes() != 3 {
		t.Fatalf("with --replace: %v %v", p, err)
	}
}

func TestGitHubPlanChecksTheToken(t *testing.T) {
	ctx := context.Background()
	f := testutil.NewGitHub(t)
	f.Perms = map[string]bool{"pull": true, "push": false}
	_, err := newPublisher(t, f, false, nil).Plan(ctx, Release{Tag: "v1", Assets: testAssets(1, "a")})
	var pe *PermissionError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "may pull on acme/shop but not push") || !strings.Contains(err.Error(), "contents: write") {
		t.Fatalf("read-only token: %v", err)
	}
	f.Perms = map[string]bool{"pull": true, "push": true}
	if p, err := newPublisher(t, f, false, nil).Plan(ctx, Release{Tag: "v1", Assets: testAssets(1, "a")}); err != nil || len(p.Notes) != 0 {
		t.Fatalf("a token that may push: %v %v", p, err)
	}
	// Limits are checked as Prepare checks them.
	big := Release{Tag: "v1", Assets: []Asset{{Name: "a.bin", Data: make([]byte, 8)}}}
	small, _ := NewGitHub(GitHubOptions{Repository: testutil.FakeGitHubRepo, BaseURL: f.BaseURL(), UploadURL: f.UploadURL(), Token: f.Token, MaxAssetSize: 4})
	if _, err := small.Plan(ctx, big); err == nil || !strings.Contains(err.Error(), "a.bin") {
		t.Fatalf("asset over the limit: %v", err)
	}
	if _, err := small.Plan(ctx, Release{Tag: "v1", Assets: []Asset{{Name: "../x", Data: []byte("x")}}}); err == nil {
		t.Fatal("a bad asset name passed")
	}
}

func TestDirPlanAndRecorder(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "dist")
	d, _ := NewDir(out, nil)
	r := NewRecorder("dir", d)
	rel := Release{Tag: "v1", Assets: testAssets(2, "a")}
	if err := r.Prepare(ctx, rel); err != nil {
		t.Fatal(err)
	}
	res, err := r.Publish(ctx, rel)
	if err != nil || len(res.Written) != 2 {
		t.Fatalf("%v %v", res, err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("the recorder wrote the directory")
	}
	if _, err := d.Publish(ctx, Release{Tag: "v1", Assets: testAssets(1, "a")}); err != nil {
		t.Fatal(err)
	}
	if err := r.Prepare(ctx, rel); err != nil || actions(r.Plan()) != "write asset-0.json=unchanged asset-1.json=upload" {
		t.Fatalf("after a real publish: %v %v", r.Plan(), err)
	}
	if id, _ := r.UploadAttestation(ctx, []byte("bundle")); id >= 0 || len(r.Attestations()) != 1 {
		t.Fatalf("attestation recorded as %d", id)
	}
}
