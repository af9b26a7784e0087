package steps

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"

	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/oci"
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
	// Platforms side by side, up to --jobs at a time; within one platform syft runs once and
	// its formats are signed side by side (each signature waits on the transparency log).
	// syft is CPU-bound, so no more of it runs at once than there are CPUs.
	type job struct {
		im     string
		copies []CopiedImage
		m      oci.Manifest
	}
	var jobs []job
	for _, im := range env.Config.Images {
		copies := st.CopiesOf(im.Name)
		for _, m := range copies[0].Platforms {
			jobs = append(jobs, job{im.Name, copies, m})
		}
	}
	formats := env.Config.SBOM.Formats
	out := make([]Attestation, len(jobs)*len(formats))
	cpus := make(chan struct{}, max(1, min(env.Jobs, runtime.NumCPU())))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, env.Jobs))
	for i, j := range jobs {
		g.Go(func() error {
			repo, err := name.NewRepository(j.copies[0].Repository)
			if err != nil {
				return err
			}
			ref := repo.Digest(j.m.Digest)
			// syft runs at most once per platform, and only if some format is missing.
			var once sync.Once
			var docs map[string][]byte
			var genErr error
			// syft catalogs under the step's context, not the group's: a sibling's failure
			// (another SBOM over its budget) must not cancel a catalog mid-way, where syft
			// 1.57's go-sync races on its context (seen under -race). Waiting for a CPU
			// slot still stops with the group.
			generate := func(wait context.Context) (map[string][]byte, error) {
				once.Do(func() {
					select {
					case cpus <- struct{}{}:
						defer func() { <-cpus }()
						docs, genErr = env.SBOM.Generate(ctx, ref)
					case <-wait.Done():
						genErr = wait.Err()
					}
				})
				return docs, genErr
			}
			fg, fctx := errgroup.WithContext(gctx)
			for k, f := range formats {
				fg.Go(func() error {
					att, err := attachSBOM(fctx, env, j.im, j.copies, j.m, f, generate)
					if err != nil {
						return err
					}
					out[i*len(formats)+k] = *att
					return nil
				})
			}
			return fg.Wait()
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	st.SBOMs = out
	return nil
}

// attachSBOM makes sure the platform's SBOM in format f is attached to every target, and
// keeps the signed document for the release.
func attachSBOM(ctx context.Context, env *Env, image string, copies []CopiedImage, m oci.Manifest, f string, generate func(context.Context) (map[string][]byte, error)) (*Attestation, error) {
	pt := formatPredicate[f]
	subject := attest.Subject{Name: copies[0].Repository, Digest: m.Digest}
	att, bundle, err := ensureAttached(ctx, env, copies, attachRequest{
		image: image, platform: m.Platform, subject: m.Digest, predicateType: pt, kind: f,
		statement: func(ctx context.Context) ([]byte, error) {
			d, err := generate(ctx)
			if err != nil {
				return nil, err
			}
			return attest.Statement([]attest.Subject{subject}, pt, d[f])
		},
	})
	if err != nil {
		return nil, err
	}
	// The release carries exactly the document that was signed.
	_, doc, err := attest.Predicate(bundle)
	if err != nil {
		return nil, err
	}
	att.Format = f
	att.Document = filepath.Join("sbom", fmt.Sprintf("%s_%s.%s", image, release.SafeName(m.Platform), formatExt[f]))
	if err := WriteFileAtomic(filepath.Join(env.StateDir, att.Document), doc, 0o644); err != nil {
		return nil, err
	}
	return att, nil
}
