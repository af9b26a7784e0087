package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/internal/fsutil"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/release"
)

// Release applies the tags (the commit point), then publishes the assets.
type Release struct{}

// Name implements Step.
func (Release) Name() string { return "release" }

// Plan implements Step.
func (Release) Plan(env *Env, st *State) Plan {
	p := Plan{Step: "release", Done: st.Done("release"), Missing: needCopies(env, st)}
	if !st.Done("verify") {
		p.Missing = append(p.Missing, "a passed verification (step verify)")
	}
	for _, im := range env.Config.Images {
		tags, err := renderTags(im.Tags, st)
		if err != nil {
			tags = im.Tags
		}
		p.Does = append(p.Does, fmt.Sprintf("tag %s in %v as %v", im.Name, im.Targets, tags))
	}
	target := env.Config.Release.Target
	if env.Publisher != nil {
		target = env.Publisher.Name()
	}
	p.Does = append(p.Does, "publish the release ("+target+"): SBOMs, provenance and signature bundles, images.lock.json, images.txt, SHA256SUMS, release.json")
	return p
}

// TagData is what tag templates see.
type TagData = config.TagData

func renderTags(tpls []string, st *State) ([]string, error) {
	d := TagData{}
	if st.Source != nil {
		d = config.NewTagData(st.Source.Tag, st.Source.Commit)
	}
	var out []string
	for _, t := range tpls {
		tag, err := config.RenderTag(t, d)
		if err != nil {
			return nil, err
		}
		out = append(out, tag)
	}
	return out, nil
}

// Run implements Step.
func (Release) Run(ctx context.Context, env *Env, st *State) error {
	rec := &ReleaseRecord{Target: env.Publisher.Name()}
	lock := &release.Lock{Version: release.LockVersion, Release: st.Source.Tag, Commit: st.Source.Commit}
	atts := append(append(append([]Attestation(nil), st.Signatures...), st.SBOMs...), st.Provenance...)

	type tagging struct {
		digest name.Digest
		tag    string
	}
	var tagsToApply []tagging
	for _, im := range env.Config.Images {
		tags, err := renderTags(im.Tags, st)
		if err != nil {
			return err
		}
		for _, c := range st.CopiesOf(im.Name) {
			d, err := name.NewDigest(c.Ref())
			if err != nil {
				return err
			}
			for _, t := range tags {
				tagsToApply = append(tagsToApply, tagging{d, t})
				rec.Tags = append(rec.Tags, c.Repository+":"+t)
			}
			li := release.LockedImage{Name: im.Name, Reference: c.Ref(), Repository: c.Repository, Digest: c.Digest, MediaType: c.MediaType, Tags: tags}
			for _, m := range c.Platforms {
				li.Platforms = append(li.Platforms, release.LockedPlatform{Platform: m.Platform, Digest: m.Digest})
			}
			for _, a := range atts {
				if r, ok := a.Referrers[c.Repository]; ok && a.Image == im.Name {
					li.Referrers = append(li.Referrers, release.LockedReferrer{Digest: r, Subject: a.Subject, PredicateType: a.PredicateType})
				}
			}
			lock.Images = append(lock.Images, li)
		}
	}

	var assets []release.Asset
	add := func(nm, rel string) error {
		b, err := os.ReadFile(filepath.Join(env.StateDir, rel))
		if err != nil {
			return fmt.Errorf("reading %s for the release: %w", rel, err)
		}
		assets = append(assets, release.Asset{Name: nm, Data: b})
		return nil
	}
	for _, a := range st.SBOMs {
		if err := add(filepath.Base(a.Document), a.Document); err != nil {
			return err
		}
	}
	for _, a := range atts {
		if err := add(filepath.Base(a.Bundle), a.Bundle); err != nil {
			return err
		}
	}
	// The project's own files, each with its blob bundle (cosign verify-blob --bundle).
	// Each file is read once: what is hashed is what is published.
	files, err := assetFiles(env.Config)
	if err != nil {
		return err
	}
	data := make([][]byte, len(files))
	for i, f := range files {
		if data[i], err = os.ReadFile(env.Config.ResolvePath(f.Path)); err != nil {
			return fmt.Errorf("reading %s for the release: %w", f.Path, err)
		}
		sum := sha256.Sum256(data[i])
		files[i].SHA256, files[i].Size = hex.EncodeToString(sum[:]), int64(len(data[i]))
	}
	if env.Config.ProvenanceEnabled() {
		if err := sameAssets(st.Assets, files); err != nil {
			return err
		}
	}
	for i, f := range files {
		assets = append(assets, release.Asset{Name: f.Name, Data: data[i]})
		if env.Signer != nil {
			bundle, err := signBlob(ctx, env, f.Name, data[i])
			if err != nil {
				return err
			}
			assets = append(assets, release.Asset{Name: f.Name + ".sigstore.json", Data: bundle})
		}
	}
	lockJSON, err := lock.JSON()
	if err != nil {
		return err
	}
	assets = append(assets, release.Asset{Name: "images.lock.json", Data: lockJSON}, release.Asset{Name: "images.txt", Data: lock.Text()})
	if len(env.PublicKey) > 0 {
		assets = append(assets, release.Asset{Name: "relay-signing.pub", Data: env.PublicKey})
	}
	sort.Slice(assets, func(i, j int) bool { return assets[i].Name < assets[j].Name })
	var names []string
	for _, a := range assets {
		names = append(names, a.Name)
	}
	meta := release.Manifest{
		Tag:           st.Source.Tag,
		Commit:        st.Source.Commit,
		Repository:    st.Source.Repo,
		CorrelationID: st.Invocation(),
		Images:        lock.Images,
		Assets:        names,
		Tags:          rec.Tags,
		RelayVersion:  env.Version,
	}
	mj, err := meta.JSON()
	if err != nil {
		return err
	}
	assets = append(assets, release.Asset{Name: "release.json", Data: mj})
	seen := map[string]bool{}
	for _, a := range assets {
		if seen[a.Name] {
			return &assetError{fmt.Sprintf("the release would hold two files named %s (a release.assets file and one relay writes): rename the release.assets file", a.Name)}
		}
		seen[a.Name] = true
	}
	sums := release.Checksums(assets)
	assets = append(assets, release.Asset{Name: "SHA256SUMS", Data: sums})
	if env.Signer != nil {
		// The checksums signed like everything else: one bundle vouches for every asset.
		b, err := signBlob(ctx, env, "SHA256SUMS", sums)
		if err != nil {
			return err
		}
		assets = append(assets, release.Asset{Name: "SHA256SUMS.sigstore.json", Data: b})
	}
	body, err := releaseNotes(ctx, env, st, lock)
	if err != nil {
		return err
	}

	rel := release.Release{Tag: st.Source.Tag, Name: st.Source.Tag, Notes: body, Assets: assets}
	// Before the commit point: the target must be able to take the release, so a read-only
	// --out or a token without contents: write never leaves public tags without a release.
	if err := env.Publisher.Prepare(ctx, rel); err != nil {
		return fmt.Errorf("the release target cannot take the release; this run applied no tag: %w", err)
	}
	// The tags: the commit point, applied only to digests present in the target.
	for _, t := range tagsToApply {
		if err := env.Registry.Tag(ctx, t.digest, t.tag); err != nil {
			return err
		}
		env.Logger.Info("tagged", "image", t.digest.Context().String()+":"+t.tag, "digest", t.digest.DigestStr())
	}
	if err := uploadAttestations(ctx, env, st, rec); err != nil {
		return err
	}
	res, err := env.Publisher.Publish(ctx, rel)
	if err != nil {
		return fmt.Errorf("publishing the release: %w", err)
	}
	rec.URL = res.URL
	for _, a := range assets {
		rec.Assets = append(rec.Assets, a.Name)
	}
	// The pin file also stays on this machine, for the workflow's next steps (pin-file output).
	rec.PinFile = "images.lock.json"
	if err := WriteFileAtomic(filepath.Join(env.StateDir, rec.PinFile), lockJSON, 0o644); err != nil {
		return fmt.Errorf("the release is published, but keeping its pin file failed: %w", err)
	}
	st.Release = rec
	return nil
}

// signBlob signs a file as an in-toto statement whose subject is the file's sha256
// (`cosign verify-blob-attestation --bundle NAME.sigstore.json NAME` checks it). A signature
// already made for the same bytes is reused, so re-runs publish the same bundle.
func signBlob(ctx context.Context, env *Env, name string, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	cache := filepath.Join(env.StateDir, "blobs", name+"-"+hex.EncodeToString(sum[:12])+".sigstore.json")
	if b, err := os.ReadFile(cache); err == nil {
		if _, err := env.Verifier.VerifyStatement(ctx, b, digest, attest.PredicateSign); err == nil {
			return b, nil
		}
	}
	stmt, err := attest.Statement([]attest.Subject{{Name: name, Digest: digest}}, attest.PredicateSign, nil)
	if err != nil {
		return nil, err
	}
	b, err := env.Signer.SignStatement(ctx, stmt)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", name, err)
	}
	if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
		return nil, err
	}
	return b, fsutil.WriteFileAtomic(cache, b, 0o644)
}

// attestationUploader is a publisher that can also feed GitHub's attestations API.
type attestationUploader interface {
	UploadAttestation(ctx context.Context, bundle []byte) (int64, error)
}

// uploadAttestations sends the provenance and SBOM bundles to GitHub's attestations API
// when the config asks for it, each once (the state remembers what was sent).
func uploadAttestations(ctx context.Context, env *Env, st *State, rec *ReleaseRecord) error {
	gh := env.Config.Release.GitHub
	up, ok := env.Publisher.(attestationUploader)
	if gh == nil || !gh.Attestations || !ok {
		return nil
	}
	if st.Release != nil && st.Release.Attestations != nil {
		rec.Attestations = st.Release.Attestations
	} else {
		rec.Attestations = map[string]int64{}
	}
	for _, a := range append(append([]Attestation(nil), st.Provenance...), st.SBOMs...) {
		if _, done := rec.Attestations[a.BundleDigest]; done {
			continue
		}
		b, err := os.ReadFile(filepath.Join(env.StateDir, a.Bundle))
		if err != nil {
			return fmt.Errorf("reading %s for the attestations API: %w", a.Bundle, err)
		}
		id, err := up.UploadAttestation(ctx, b)
		if err != nil {
			return err
		}
		rec.Attestations[a.BundleDigest] = id
		st.Release = rec // saved with the state even if a later upload fails
		env.Logger.Info("attestation uploaded to GitHub", "predicate_type", a.PredicateType, "subject", a.Subject, "id", id)
	}
	return nil
}

// NotesData is what release.github.notes templates see.
type NotesData struct {
	Version, Tag, Commit string
	Images               []release.LockedImage
	PinFile              string // images.txt: one repository@digest per line
	Verify               string // a relay verify command for the first image
}

const defaultNotes = `Release {{ .Version }} ({{ .Commit }})

Images, by digest (pin these; tags can move):
{{ range .Images }}- {{ .Reference }}{{ range .Platforms }}
  - {{ .Platform }}: {{ .Digest }}{{ end }}
{{ end }}
Every digest is signed and carries SBOMs (SPDX, CycloneDX) and SLSA provenance. Check them:

    {{ .Verify }}

SHA256SUMS lists every asset; SHA256SUMS.sigstore.json is its signature.
`

func releaseNotes(ctx context.Context, env *Env, st *State, lock *release.Lock) (string, error) {
	tpl := defaultNotes
	if gh := env.Config.Release.GitHub; gh != nil && gh.Notes != "" {
		tpl = gh.Notes
	}
	t, err := template.New("notes").Option("missingkey=error").Parse(tpl)
	if err != nil {
		return "", fmt.Errorf("release.github.notes: %w", err)
	}
	d := NotesData{Version: st.Source.Tag, Tag: st.Source.Tag, Commit: st.Source.Commit, Images: lock.Images, PinFile: string(lock.Text())}
	if d.Version == "" && len(d.Commit) >= 12 {
		d.Version = d.Commit[:12]
	}
	if len(lock.Images) > 0 {
		d.Verify = "relay verify " + lock.Images[0].Reference + " " + verifyFlags(ctx, env)
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("release.github.notes: %w", err)
	}
	return b.String(), nil
}

// verifyFlags are the identity flags a consumer passes to check this release.
func verifyFlags(ctx context.Context, env *Env) string {
	if p, ok := env.Signer.(interface {
		Policy(context.Context) (attest.IdentityPolicy, error)
	}); ok {
		if pol, err := p.Policy(ctx); err == nil {
			return fmt.Sprintf("--certificate-identity %s --certificate-oidc-issuer %s", pol.Identity, pol.Issuer)
		}
	}
	return "--key relay-signing.pub"
}
