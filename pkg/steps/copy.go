package steps

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
)

type nameRepo = name.Repository

// Copy copies every built image by digest into each target repository; no tags.
type Copy struct{}

// Name implements Step.
func (Copy) Name() string { return "copy" }

// Plan implements Step.
func (Copy) Plan(env *Env, st *State) Plan {
	p := Plan{Step: "copy", Done: st.Done("copy")}
	for _, im := range env.Config.Images {
		b := st.Build(im.Name)
		if b == nil {
			p.Missing = append(p.Missing, "the build of "+im.Name+" (step build)")
		}
		for _, t := range im.Targets {
			repo, err := env.MapRepository(t)
			dst := t
			if err == nil {
				dst = repo.String()
			}
			p.Does = append(p.Does, fmt.Sprintf("copy %s (all platforms, with referrers) by digest to %s, no tags", im.Name, dst))
		}
	}
	return p
}

// Run implements Step.
func (Copy) Run(ctx context.Context, env *Env, st *State) error {
	var out []CopiedImage
	for _, im := range env.Config.Images {
		b := st.Build(im.Name)
		src, err := name.NewDigest(b.Ref)
		if err != nil {
			return fmt.Errorf("state holds a malformed build reference %q: %w", b.Ref, err)
		}
		var dsts []name.Repository
		for _, t := range im.Targets {
			dst, err := env.MapRepository(t)
			if err != nil {
				return err
			}
			dsts = append(dsts, dst)
		}
		// One read of the build registry feeds every target.
		copies, err := env.Registry.CopyMulti(ctx, src, dsts)
		if err != nil {
			return err
		}
		for _, d := range copies {
			r, err := env.Registry.Resolve(ctx, d)
			if err != nil {
				return err
			}
			if r.Digest != src.DigestStr() {
				return fmt.Errorf("copy of %s to %s changed the digest to %s", src, d.Context(), r.Digest)
			}
			out = append(out, CopiedImage{Name: im.Name, Repository: d.Context().String(), Digest: r.Digest, MediaType: r.MediaType, Size: r.Size, Platforms: r.Manifests})
			env.Logger.Info("copied by digest", "image", d.String(), "digest", r.Digest)
		}
	}
	st.Copies = out
	return nil
}
