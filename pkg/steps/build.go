package steps

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"

	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/config"
)

// Build builds every image with the configured builder and records the pushed digests.
type Build struct{}

// Name implements Step.
func (Build) Name() string { return "build" }

// Plan implements Step.
func (Build) Plan(env *Env, st *State) Plan {
	p := Plan{Step: "build", Done: st.Done("build")}
	if st.Source == nil {
		p.Missing = append(p.Missing, "the checkout (step checkout)")
	}
	for _, im := range env.Config.Images {
		repo, err := buildRepo(env, im.Name)
		dst := "?"
		if err == nil {
			dst = repo.String()
		}
		p.Does = append(p.Does, fmt.Sprintf("build %s for %v with the %s builder, push by digest to %s", im.Name, im.Platforms, builderName(env), dst))
	}
	return p
}

func builderName(env *Env) string {
	if env.Builder == nil {
		return env.Config.Builder.Kind
	}
	return env.Builder.Name()
}

// Run implements Step.
func (Build) Run(ctx context.Context, env *Env, st *State) error {
	var out []BuiltImage
	for _, im := range env.Config.Images {
		repo, err := buildRepo(env, im.Name)
		if err != nil {
			return err
		}
		bi, err := buildImage(im, config.NewTagData(st.Source.Tag, st.Source.Commit))
		if err != nil {
			return err
		}
		res, err := env.Builder.Build(ctx, build.Request{
			Image:      bi,
			ContextDir: filepath.Join(st.Source.Dir, filepath.FromSlash(im.Context)),
			Repository: repo,
			Source: build.SourceInfo{
				Repo: st.Source.Repo, Commit: st.Source.Commit, Tag: st.Source.Tag, CommitTime: st.Source.CommitTime,
			},
		})
		if err != nil {
			return fmt.Errorf("building %s: %w", im.Name, err)
		}
		b := BuiltImage{Name: im.Name, Result: *res}
		if len(res.Log) > 0 {
			sum := sha256.Sum256(res.Log)
			b.LogDigest = fmt.Sprintf("sha256:%x", sum)
			b.LogFile = filepath.Join("logs", "build-"+im.Name+".log")
			if err := WriteFileAtomic(filepath.Join(env.StateDir, b.LogFile), res.Log, 0o644); err != nil {
				return err
			}
		}
		env.Logger.Info("built", "image", res.Ref, "digest", res.Digest, "platforms", len(res.Platforms))
		out = append(out, b)
	}
	st.Builds = out
	return nil
}

func buildRepo(env *Env, image string) (nameRepo, error) {
	return env.MapRepository(env.Config.Builder.Registry + "/" + image)
}

// buildImage is what the builders need of relay.yaml's image entry, build arguments
// rendered for the release.
func buildImage(im config.Image, d config.TagData) (build.Image, error) {
	out := build.Image{Name: im.Name, Platforms: im.Platforms}
	if l := im.Local; l != nil {
		out.Local = &build.LocalSpec{Base: l.Base, Entrypoint: l.Entrypoint, Cmd: l.Cmd, Env: l.Env, User: l.User,
			Workdir: l.Workdir, Labels: l.Labels, Ports: l.Ports}
		if g := l.Go; g != nil {
			out.Local.Go = &build.GoSpec{Main: g.Main, Binary: g.Binary, Flags: g.Flags}
			for _, f := range g.Ldflags { // e.g. -X main.version={{ .Version }}
				r, err := config.RenderValue("ldflags", f, d)
				if err != nil {
					return out, fmt.Errorf("image %s: %w", im.Name, err)
				}
				out.Local.Go.Ldflags = append(out.Local.Go.Ldflags, r)
			}
		}
		for _, f := range l.Files {
			out.Local.Files = append(out.Local.Files, build.File{Src: f.Src, Dst: f.Dst, Mode: f.Mode, Platforms: f.Platforms})
		}
	}
	if dk := im.Docker; dk != nil {
		out.Docker = &build.DockerSpec{Dockerfile: dk.Dockerfile, Target: dk.Target}
		for k, v := range dk.BuildArgs {
			r, err := config.RenderValue("build argument "+k, v, d)
			if err != nil {
				return out, fmt.Errorf("image %s: %w", im.Name, err)
			}
			if out.Docker.BuildArgs == nil {
				out.Docker.BuildArgs = map[string]string{}
			}
			out.Docker.BuildArgs[k] = r
		}
	}
	return out, nil
}
