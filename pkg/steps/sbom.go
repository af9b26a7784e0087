package steps

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/release"
)

// SBOM catalogs every platform manifest from the target registry and attaches SPDX and
// CycloneDX documents as signed in-toto attestations.
type SBOM struct{}

// Name implements Step.
func (SBOM) Name() string { return "sbom" }

var formatPredicate = map[string]string{
	"spdx-json":      attest.PredicateSPDX,
	"cyclonedx-json": attest.PredicateCycloneDX,
}

var formatExt = map[string]string{
	"spdx-json":      "spdx.json",
	"cyclonedx-json": "cdx.json",
}

// Plan implements Step.
func (SBOM) Plan(env *Env, st *State) Plan {
	p := Plan{Step: "sbom", Done: st.Done("sbom")}
	if !env.Config.SBOMEnabled() {
		p.Does = []string{"nothing: sbom.enabled is false"}
		return p
	}
	p.Missing = needCopies(env, st)
	for _, im := range env.Config.Images {
		p.Does = append(p.Does, fmt.Sprintf("catalog each platform of %s with syft from the target registry; attach %v as signed attestations", im.Name, env.Config.SBOM.Formats))
	}
	return p
}

// Run implements Step.
func (SBOM) Run(ctx context.Context, env *Env, st *State) error {
	if !env.Config.SBOMEnabled() {
		st.SBOMs = nil
		return nil
	}
	var out []Attestation
	for _, im := range env.Config.Images {
		copies := st.CopiesOf(im.Name)
		repo, err := name.NewRepository(copies[0].Repository)
		if err != nil {
			return err
		}
		for _, m := range copies[0].Platforms {
			ref := repo.Digest(m.Digest)
			// syft runs at most once per platform, and only if some format is missing.
			var once sync.Once
			var docs map[string][]byte
			var genErr error
			generate := func(ctx context.Context) (map[string][]byte, error) {
				once.Do(func() { docs, genErr = env.SBOM.Generate(ctx, ref) })
				return docs, genErr
			}
			for _, f := range env.Config.SBOM.Formats {
				pt := formatPredicate[f]
				subject := attest.Subject{Name: copies[0].Repository, Digest: m.Digest}
				att, bundle, err := ensureAttached(ctx, env, copies, attachRequest{
					image: im.Name, platform: m.Platform, subject: m.Digest, predicateType: pt, kind: f,
					statement: func(ctx context.Context) ([]byte, error) {
						d, err := generate(ctx)
						if err != nil {
							return nil, err
						}
						return attest.Statement([]attest.Subject{subject}, pt, d[f])
					},
				})
				if err != nil {
					return err
				}
				// The release carries exactly the document that was signed.
				_, doc, err := attest.Predicate(bundle)
				if err != nil {
					return err
				}
				att.Format = f
				att.Document = filepath.Join("sbom", fmt.Sprintf("%s_%s.%s", im.Name, release.SafeName(m.Platform), formatExt[f]))
				if err := WriteFileAtomic(filepath.Join(env.StateDir, att.Document), doc, 0o644); err != nil {
					return err
				}
				out = append(out, *att)
			}
		}
	}
	st.SBOMs = out
	return nil
}
