package steps

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"
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
	type job struct {
		image string
		src   name.Digest
		dst   name.Repository
		idx   int
	}
	var jobs []job
	for _, im := range env.Config.Images {
		b := st.Build(im.Name)
		src, err := name.NewDigest(b.Ref)
		if err != nil {
			return fmt.Errorf("state holds a malformed build reference %q: %w", b.Ref, err)
		}
		for _, t := range im.Targets {
			dst, err := env.MapRepository(t)
			if err != nil {
				return err
			}
			jobs = append(jobs, job{image: im.Name, src: src, dst: dst, idx: len(jobs)})
		}
	}
	out := make([]CopiedImage, len(jobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, env.Jobs))
	for _, j := range jobs {
		g.Go(func() error {
			d, err := env.Registry.Copy(gctx, j.src, j.dst)
			if err != nil {
				return err
			}
			r, err := env.Registry.Resolve(gctx, d)
			if err != nil {
				return err
			}
			if r.Digest != j.src.DigestStr() {
				return fmt.Errorf("copy of %s to %s changed the digest to %s", j.src, j.dst, r.Digest)
			}
			out[j.idx] = CopiedImage{Name: j.image, Repository: j.dst.String(), Digest: r.Digest, MediaType: r.MediaType, Size: r.Size, Platforms: r.Manifests}
			env.Logger.Info("copied by digest", "image", d.String(), "digest", r.Digest)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	st.Copies = out
	return nil
}
