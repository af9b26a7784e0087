package steps

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/relaydev/relay/pkg/attach"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/release"
	"github.com/relaydev/relay/pkg/source"
)

// fakeBuilder pushes a seeded two-platform index: the steps after build only see digests.
type fakeBuilder struct{ client *oci.Client }

func (fakeBuilder) Name() string { return "fake" }
func (f fakeBuilder) Build(ctx context.Context, req build.Request) (*build.Result, error) {
	var adds []mutate.IndexAddendum
	for i, p := range req.Image.Platforms {
		img, err := random.Image(128, 1, random.WithSource(rand.New(rand.NewSource(int64(i+7)))))
		if err != nil {
			return nil, err
		}
		plat, _ := v1.ParsePlatform(p)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	d, err := f.client.Write(ctx, req.Repository, idx)
	if err != nil {
		return nil, err
	}
	r, err := f.client.Resolve(ctx, d)
	if err != nil {
		return nil, err
	}
	return &build.Result{Ref: d.String(), Digest: r.Digest, MediaType: r.MediaType, Platforms: r.Manifests, Builder: "fake", RunID: "run-1", Log: []byte("log\n")}, nil
}

// fakeSBOM counts its calls atomically: the sbom step catalogs platforms side by side.
type fakeSBOM struct{ n atomic.Int32 }

func (f *fakeSBOM) calls() int { return int(f.n.Load()) }

func (f *fakeSBOM) Generate(_ context.Context, ref name.Digest) (map[string][]byte, error) {
	f.n.Add(1)
	return map[string][]byte{
		"spdx-json":      []byte(`{"spdxVersion":"SPDX-2.3","name":"` + ref.DigestStr() + `"}`),
		"cyclonedx-json": []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6"}`),
	}, nil
}

func pipelineEnv(t *testing.T) (*Env, *fakeSBOM, string) {
	t.Helper()
	host := testutil.Registry(t, true)
	cfg, err := config.Parse("relay.yaml", t.TempDir(), []byte(`version: 1
source: {repo: ., ref: v1.0.0}
builder: {kind: local, registry: build.example.com/b}
images:
  - name: app
    platforms: [linux/amd64, linux/arm64]
    local: {go: {main: .}}
    targets: [ghcr.io/acme/app, docker.io/acme/app]
    tags: ["{{ .Version }}"]
`))
	if err != nil {
		t.Fatal(err)
	}
	client, _ := oci.New()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.New(rand.NewSource(3)))
	signer, _ := attest.NewKeySigner(k)
	tm, _ := signer.TrustedMaterial()
	ver, _ := attest.NewKeyVerifier(tm)
	dir := t.TempDir()
	out := filepath.Join(dir, "dist")
	pub, _ := release.NewDir(out, nil)
	var logs bytes.Buffer
	env := testEnv(t, &logs)
	sb := &fakeSBOM{}
	env.Config, env.Mode, env.Registry, env.Builder = cfg, ModeLocal, client, fakeBuilder{client}
	env.Signer, env.Verifier, env.SBOM, env.Publisher = signer, ver, sb, pub
	env.StateDir, env.Jobs, env.CorrelationID, env.RunnerName, env.Version = dir, 2, "cid-1", "runner-1", "test"
	env.MapRepository = func(s string) (name.Repository, error) { return name.NewRepository(host + "/" + s) }
	return env, sb, out
}

// checkedOut is a state whose checkout of v1.0.0 is done, made by the run cid.
func checkedOut(t *testing.T, cid string) *State {
	t.Helper()
	st := NewState(ModeLocal, Inputs{Ref: "v1.0.0"}, cid, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st.Source = &source.Result{Repo: "https://example.com/app.git", Ref: "v1.0.0", Commit: strings.Repeat("ab", 20), Tag: "v1.0.0", Dir: t.TempDir()}
	st.markDone(StepRecord{Name: "checkout"})
	return st
}

func TestPipelineAfterCheckout(t *testing.T) {
	ctx := context.Background()
	env, sb, out := pipelineEnv(t)
	st := checkedOut(t, "cid-1")
	statePath := filepath.Join(env.StateDir, "state.json")
	x := &Executor{Env: env, StatePath: statePath}
	if err := x.Run(ctx, All(), st); err != nil {
		t.Fatal(err)
	}
	if len(st.Copies) != 2 || st.Copies[0].Digest != st.Builds[0].Digest {
		t.Fatalf("copies %+v", st.Copies)
	}
	// index + 2 platforms signed; 2 platforms x 2 formats; one provenance.
	if len(st.Signatures) != 3 || len(st.SBOMs) != 4 || len(st.Provenance) != 1 || sb.calls() != 2 {
		t.Fatalf("sig %d sbom %d prov %d syft calls %d", len(st.Signatures), len(st.SBOMs), len(st.Provenance), sb.calls())
	}
	if st.Verification.Checked != 2*(3+4+1) {
		t.Fatalf("verified %d checks", st.Verification.Checked)
	}
	lockRaw, err := os.ReadFile(filepath.Join(out, "images.lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	var lock release.Lock
	json.Unmarshal(lockRaw, &lock)
	if len(lock.Images) != 2 || len(lock.Images[0].Referrers) != 8 || lock.Images[0].Tags[0] != "v1.0.0" {
		t.Fatalf("lock %+v", lock)
	}
	for _, im := range lock.Images {
		d, _ := name.NewDigest(im.Reference)
		if ok, err := env.Registry.Exists(ctx, d); !ok || err != nil {
			t.Fatalf("%s does not resolve: %v", im.Reference, err)
		}
		if got, _ := env.Registry.TagDigest(ctx, d.Context().Tag("v1.0.0")); got != im.Digest {
			t.Fatalf("tag of %s points at %q", im.Repository, got)
		}
	}

	// A forced re-run of every step converges: no new referrers, no new syft run.
	before := referrerCount(t, env, st)
	x.Force = true
	if err := x.Run(ctx, All()[1:], st); err != nil {
		t.Fatal(err)
	}
	if after := referrerCount(t, env, st); after != before {
		t.Fatalf("re-run added referrers: %d -> %d", before, after)
	}
	if sb.calls() != 2 {
		t.Fatalf("re-run catalogued again: %d calls", sb.calls())
	}
	for _, a := range st.Signatures {
		if !a.Reused {
			t.Fatalf("signature not reused on re-run: %+v", a)
		}
	}
}

func TestVerifyFailsWithoutSignature(t *testing.T) {
	ctx := context.Background()
	env, _, _ := pipelineEnv(t)
	st := NewState(ModeLocal, Inputs{}, "c", time.Unix(0, 0))
	st.Source = &source.Result{Commit: strings.Repeat("ab", 20), Tag: "v1.0.0", Dir: t.TempDir()}
	x := &Executor{Env: env, StatePath: filepath.Join(env.StateDir, "s.json")}
	if err := x.Run(ctx, []Step{Build{}, Copy{}, SBOM{}, Provenance{}}, st); err != nil {
		t.Fatal(err)
	}
	err := x.Run(ctx, []Step{Verify{}}, st)
	if err == nil || !strings.Contains(err.Error(), "no https://sigstore.dev/cosign/sign/v1 attached") {
		t.Fatalf("verify passed without signatures: %v", err)
	}
	// Signed by a key the verifier does not trust: still rejected.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.New(rand.NewSource(99)))
	env.Signer, _ = attest.NewKeySigner(k)
	if err := x.Run(ctx, []Step{Sign{}}, st); err != nil {
		t.Fatal(err)
	}
	if err := x.Run(ctx, []Step{Verify{}}, st); err == nil || !strings.Contains(err.Error(), "no valid") {
		t.Fatalf("verify accepted an untrusted key: %v", err)
	}
}

func referrerCount(t *testing.T, env *Env, st *State) int {
	t.Helper()
	n := 0
	for _, c := range st.Copies {
		repo, _ := name.NewRepository(c.Repository)
		for _, d := range digestsOf(c) {
			refs, err := env.Registry.Referrers(context.Background(), repo.Digest(d.digest))
			if err != nil {
				t.Fatal(err)
			}
			n += len(refs)
		}
	}
	return n
}

// recordingPublisher is a publisher that also takes attestations, as the GitHub one does.
type recordingPublisher struct {
	rel          release.Release
	attestations [][]byte
	publishes    int
	prepares     int
	prepareErr   error
}

func (p *recordingPublisher) Name() string { return "recording" }
func (p *recordingPublisher) Prepare(_ context.Context, r release.Release) error {
	p.prepares++
	return p.prepareErr
}
func (p *recordingPublisher) Publish(_ context.Context, r release.Release) (*release.Result, error) {
	p.rel, p.publishes = r, p.publishes+1
	return &release.Result{URL: "https://github.example/acme/app/releases/tag/" + r.Tag}, nil
}
func (p *recordingPublisher) UploadAttestation(_ context.Context, b []byte) (int64, error) {
	p.attestations = append(p.attestations, b)
	return int64(len(p.attestations)), nil
}

func TestReleaseNotesSignedSumsAndAttestations(t *testing.T) {
	ctx := context.Background()
	env, _, _ := pipelineEnv(t)
	env.Config.Release.GitHub = &config.GitHubRelease{Repository: "acme/app", Attestations: true}
	pub := &recordingPublisher{}
	env.Publisher = pub
	st := checkedOut(t, "cid-1")
	x := &Executor{Env: env, StatePath: filepath.Join(env.StateDir, "state.json")}
	if err := x.Run(ctx, All(), st); err != nil {
		t.Fatal(err)
	}
	notes := pub.rel.Notes
	for _, want := range []string{"Release v1.0.0 (" + strings.Repeat("ab", 20) + ")", st.Copies[0].Ref(), "linux/arm64: " + st.Copies[0].Platforms[1].Digest, "relay verify " + st.Copies[0].Ref() + " --key relay-signing.pub"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	var sums, sig []byte
	for _, a := range pub.rel.Assets {
		switch a.Name {
		case "SHA256SUMS":
			sums = a.Data
		case "SHA256SUMS.sigstore.json":
			sig = a.Data
		}
	}
	sum := sha256.Sum256(sums)
	if _, err := env.Verifier.VerifyStatement(ctx, sig, "sha256:"+hex.EncodeToString(sum[:]), attest.PredicateSign); err != nil {
		t.Fatalf("SHA256SUMS signature: %v", err)
	}
	// Each provenance and SBOM bundle goes to the attestations API once.
	if len(pub.attestations) != len(st.Provenance)+len(st.SBOMs) || len(st.Release.Attestations) != len(pub.attestations) {
		t.Fatalf("%d attestations uploaded, state records %d", len(pub.attestations), len(st.Release.Attestations))
	}
	// The release step again (a resumed or forced run): nothing uploaded twice, same signature.
	x.Force = true
	if err := x.Run(ctx, []Step{Release{}}, st); err != nil {
		t.Fatal(err)
	}
	if len(pub.attestations) != len(st.Provenance)+len(st.SBOMs) {
		t.Fatalf("re-run uploaded attestations again: %d", len(pub.attestations))
	}
	for _, a := range pub.rel.Assets {
		if a.Name == "SHA256SUMS.sigstore.json" && !bytes.Equal(a.Data, sig) {
			t.Fatal("re-run signed SHA256SUMS again instead of reusing the signature")
		}
	}
	// A custom template, and a broken one.
	env.Config.Release.GitHub.Notes = "{{ .Version }} pins:\n{{ .PinFile }}"
	if err := x.Run(ctx, []Step{Release{}}, st); err != nil || !strings.HasPrefix(pub.rel.Notes, "v1.0.0 pins:\n"+st.Copies[0].Ref()) {
		t.Fatalf("custom notes %q: %v", pub.rel.Notes, err)
	}
	env.Config.Release.GitHub.Notes = "{{ .Nope }}"
	if err := x.Run(ctx, []Step{Release{}}, st); err == nil || !strings.Contains(err.Error(), "release.github.notes") {
		t.Fatalf("broken template: %v", err)
	}
}

// TestClassicSignatures: with signing.classic every digest in every target also gets a cosign
// classic .sig signature and every attestation a classic .att layer (the bundle's envelope),
// the verify step checks them, and a forced re-run adds none.
func TestClassicSignatures(t *testing.T) {
	ctx := context.Background()
	env, _, _ := pipelineEnv(t)
	env.Classic = true
	st := checkedOut(t, "cid-1")
	x := &Executor{Env: env, StatePath: filepath.Join(env.StateDir, "state.json")}
	if err := x.Run(ctx, All(), st); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		n := 0
		for _, c := range st.Copies {
			repo, _ := name.NewRepository(c.Repository)
			for _, d := range digestsOf(c) {
				sigs, err := env.Registry.ClassicSignatures(ctx, repo.Digest(d.digest))
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range sigs {
					if err := attest.VerifyClassic(env.Signer.(*attest.KeySigner).PublicKey(), s.Payload, s.Signature, d.digest); err != nil {
						t.Fatalf("%s@%s: %v", c.Repository, d.digest, err)
					}
				}
				n += len(sigs)
			}
		}
		return n
	}
	// Checked with trust made from the key alone, not the pipeline's verifier.
	tm, _ := attest.TrustedKey(env.Signer.(*attest.KeySigner).PublicKey(), "")
	kv, _ := attest.NewKeyVerifier(tm)
	countAtt := func() int {
		n := 0
		for _, c := range st.Copies {
			repo, _ := name.NewRepository(c.Repository)
			for _, d := range digestsOf(c) {
				atts, err := env.Registry.ClassicAttestations(ctx, repo.Digest(d.digest))
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range atts {
					v, err := kv.VerifyClassicAttestation(ctx, a, d.digest, a.PredicateType)
					if err != nil || v.PredicateType != a.PredicateType {
						t.Fatalf("%s@%s .att: %v", c.Repository, d.digest, err)
					}
				}
				n += len(atts)
			}
		}
		return n
	}
	// 2 targets x (index + 2 platforms); 2 targets x (2 platforms x 2 SBOMs + provenance).
	if n, a := count(), countAtt(); n != 6 || a != 10 {
		t.Fatalf("%d classic signatures and %d attestations, want 6 and 10", n, a)
	}
	if st.Verification.Checked != 2*(3+4+1)+6+10 {
		t.Fatalf("verify checked %d, want the bundles, 6 classic signatures and 10 classic attestations", st.Verification.Checked)
	}
	x.Force = true
	if err := x.Run(ctx, []Step{Sign{}, SBOM{}, Provenance{}, Verify{}}, st); err != nil {
		t.Fatal(err)
	}
	if n, a := count(), countAtt(); n != 6 || a != 10 {
		t.Fatalf("re-run left %d classic signatures and %d attestations, want 6 and 10", n, a)
	}
	// A tampered envelope is refused.
	repo, _ := name.NewRepository(st.Copies[0].Repository)
	atts, _ := env.Registry.ClassicAttestations(ctx, repo.Digest(st.Copies[0].Platforms[0].Digest))
	bad := atts[0]
	bad.Payload = []byte(strings.Replace(string(bad.Payload), `"payload":"`, `"payload":"e30`, 1))
	if _, err := kv.VerifyClassicAttestation(ctx, bad, st.Copies[0].Platforms[0].Digest, ""); err == nil {
		t.Fatal("a tampered classic attestation verified")
	}
}

// TestReleaseChecksTargetBeforeTagging: a release target that cannot take the release is
// found before the commit point, so no tag becomes public without its release.
func TestReleaseChecksTargetBeforeTagging(t *testing.T) {
	ctx := context.Background()
	env, _, _ := pipelineEnv(t)
	pub := &recordingPublisher{prepareErr: errors.New("release directory /ro is not writable")}
	env.Publisher = pub
	st := checkedOut(t, "cid-1")
	x := &Executor{Env: env, StatePath: filepath.Join(env.StateDir, "state.json")}
	err := x.Run(ctx, All(), st)
	if err == nil || !strings.Contains(err.Error(), "this run applied no tag") || !strings.Contains(err.Error(), "/ro is not writable") {
		t.Fatalf("release into a target that refuses: %v", err)
	}
	if pub.prepares != 1 || pub.publishes != 0 || st.Done("release") {
		t.Fatalf("prepares %d, publishes %d", pub.prepares, pub.publishes)
	}
	for _, c := range st.Copies {
		repo, _ := name.NewRepository(c.Repository)
		if got, err := env.Registry.TagDigest(ctx, repo.Tag("v1.0.0")); err == nil && got != "" {
			t.Fatalf("%s was tagged although the release target refused: %s", c.Repository, got)
		}
	}
	// Fixed: the same state finishes the release.
	pub.prepareErr = nil
	if err := x.Run(ctx, All(), st); err != nil || pub.publishes != 1 {
		t.Fatalf("after the fix: %v, %d publishes", err, pub.publishes)
	}
}

// TestReleaseAgreesWithItself: release.json and the provenance name one invocation; a
// retry from scratch (a new correlation id) reuses the provenance it would have written and
// names that provenance's invocation; after a config change the old provenance is not
// reused.
func TestReleaseAgreesWithItself(t *testing.T) {
	ctx := context.Background()
	env, _, out := pipelineEnv(t)
	releaseJSON := func() map[string]any {
		var m map[string]any
		b, _ := os.ReadFile(filepath.Join(out, "release.json"))
		json.Unmarshal(b, &m)
		return m
	}
	invocation := func(st *State) string {
		b, _ := os.ReadFile(filepath.Join(env.StateDir, st.Provenance[0].Bundle))
		_, pred, err := attest.Predicate(b)
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			RunDetails struct {
				Metadata struct {
					InvocationID string `json:"invocationId"`
				} `json:"metadata"`
			} `json:"runDetails"`
		}
		json.Unmarshal(pred, &p)
		return p.RunDetails.Metadata.InvocationID
	}
	run := func(st *State, resumingCID string) {
		t.Helper()
		env.CorrelationID = resumingCID
		x := &Executor{Env: env, StatePath: filepath.Join(env.StateDir, "state.json")}
		if err := x.Run(ctx, All(), st); err != nil {
			t.Fatal(err)
		}
	}
	// Run 1 stops before release; run 2 (another correlation id) resumes and releases.
	st := checkedOut(t, "cid-first")
	env.CorrelationID = "cid-first"
	x := &Executor{Env: env, StatePath: filepath.Join(env.StateDir, "state.json")}
	if err := x.Run(ctx, All()[:len(All())-1], st); err != nil {
		t.Fatal(err)
	}
	run(st, "cid-resumed")
	if got := releaseJSON()["correlation_id"]; got != "cid-first" || invocation(st) != "cid-first" {
		t.Fatalf("resumed run: release.json names %v, provenance %q; want the run that made the state", got, invocation(st))
	}
	// From scratch with a new id and the same config: the provenance is reused.
	before := referrerCount(t, env, st)
	st2 := checkedOut(t, "cid-scratch")
	run(st2, "cid-scratch")
	if !st2.Provenance[0].Reused || releaseJSON()["correlation_id"] != "cid-first" || referrerCount(t, env, st2) != before {
		t.Fatalf("retry from scratch: reused %v, release.json %v, referrers %d -> %d", st2.Provenance[0].Reused, releaseJSON()["correlation_id"], before, referrerCount(t, env, st2))
	}
	// The config changed: a new provenance, and release.json names this run.
	env.Config.Digest = "sha256:" + strings.Repeat("cd", 32)
	st3 := checkedOut(t, "cid-changed")
	run(st3, "cid-changed")
	if st3.Provenance[0].Reused || invocation(st3) != "cid-changed" || releaseJSON()["correlation_id"] != "cid-changed" {
		t.Fatalf("after a config change: reused %v, provenance %q, release.json %v", st3.Provenance[0].Reused, invocation(st3), releaseJSON()["correlation_id"])
	}
	b, _ := os.ReadFile(filepath.Join(env.StateDir, st3.Provenance[0].Bundle))
	_, pred, _ := attest.Predicate(b)
	if !strings.Contains(string(pred), strings.Repeat("cd", 32)) {
		t.Fatalf("provenance does not carry this run's config digest: %s", pred)
	}
}

// TestVerifyReportsDuplicates: two runs on two states that raced leave two valid
// signatures saying the same thing; verify and VerifyImage name them, and still pass.
func TestVerifyReportsDuplicates(t *testing.T) {
	ctx := context.Background()
	env, _, _ := pipelineEnv(t)
	st := checkedOut(t, "cid-1")
	x := &Executor{Env: env, StatePath: filepath.Join(env.StateDir, "state.json")}
	if err := x.Run(ctx, All()[:len(All())-1], st); err != nil {
		t.Fatal(err)
	}
	if len(st.Verification.Duplicates) != 0 {
		t.Fatalf("duplicates after one run: %v", st.Verification.Duplicates)
	}
	// The other run signs the index again: a new bundle, the same statement and signer.
	c := st.Copies[0]
	repo, _ := name.NewRepository(c.Repository)
	stmt, _ := attest.Statement([]attest.Subject{{Name: c.Repository, Digest: c.Digest}}, attest.PredicateSign, nil)
	b, err := env.Signer.SignStatement(ctx, stmt)
	if err != nil {
		t.Fatal(err)
	}
	raw, mt, _ := env.Registry.FetchManifest(ctx, repo.Digest(c.Digest))
	if _, err := env.Registry.AttachBundle(ctx, repo.Digest(c.Digest), mt, int64(len(raw)), b, "dsse-envelope", attest.PredicateSign); err != nil {
		t.Fatal(err)
	}
	x.Force = true
	if err := x.Run(ctx, []Step{Verify{}}, st); err != nil {
		t.Fatalf("duplicates are no reason to fail: %v", err)
	}
	if d := st.Verification.Duplicates; len(d) != 1 || !strings.Contains(d[0], c.Ref()+": "+attest.PredicateSign+" (2 referrers say the same)") {
		t.Fatalf("duplicates %v", d)
	}
	rep, err := attach.VerifyImage(ctx, env.Registry, env.Verifier, repo.Digest(c.Digest))
	if err != nil || len(rep.Digests[0].Duplicates) != 1 || len(rep.Digests[1].Duplicates) != 0 {
		t.Fatalf("VerifyImage: %+v %v", rep, err)
	}
}
