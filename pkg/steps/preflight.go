package steps

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"

	"github.com/relaydev/relay/pkg/source"
)

// Finding is one read-only check of --dry-run.
type Finding struct {
	Check string `json:"check"`
	OK    bool   `json:"ok"`
	Note  string `json:"note"`
}

// Preflight resolves and reads everything a real run would touch, writing nothing: the
// source ref (without cloning), and each build and target repository (reachable,
// credentials accepted, where the release tags point today).
func Preflight(ctx context.Context, env *Env) []Finding {
	cfg := env.Config
	type job struct {
		check string
		run   func(context.Context) (string, error)
	}
	jobs := []job{{
		check: fmt.Sprintf("source %s at %s", cfg.Source.Repo, cfg.Source.Ref),
		run: func(ctx context.Context) (string, error) {
			rn, err := source.ResolveRef(ctx, source.Options{Repo: env.SourceRepo, Ref: cfg.Source.Ref, Token: env.SourceToken})
			if err != nil {
				return "", err
			}
			return "found " + rn.String(), nil
		},
	}}
	for _, im := range cfg.Images {
		repos := []string{cfg.Builder.Registry + "/" + im.Name}
		repos = append(repos, im.Targets...)
		for i, r := range repos {
			kind := "target"
			if i == 0 {
				kind = "build repository"
			}
			jobs = append(jobs, job{
				check: fmt.Sprintf("%s %s", kind, r),
				run: func(ctx context.Context) (string, error) {
					repo, err := env.MapRepository(r)
					if err != nil {
						return "", err
					}
					return checkRepository(ctx, env, repo, im.Tags, kind == "target")
				},
			})
		}
	}
	if chk, ok := env.Publisher.(interface {
		Check(context.Context) (string, error)
	}); ok && cfg.Release.Target == "dir" {
		jobs = append(jobs, job{check: "release directory", run: chk.Check})
	}
	out := make([]Finding, len(jobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, env.Jobs))
	for i, j := range jobs {
		g.Go(func() error {
			note, err := j.run(gctx)
			out[i] = Finding{Check: j.check, OK: err == nil, Note: note}
			if err != nil {
				out[i].Note = err.Error()
			}
			return nil
		})
	}
	_ = g.Wait()
	return out
}

func checkRepository(ctx context.Context, env *Env, repo name.Repository, tags []string, isTarget bool) (string, error) {
	// Reading a tag proves the registry answers and accepts the credentials for this
	// repository; a missing tag is fine.
	probe := "latest"
	if isTarget && len(tags) > 0 && !hasTemplate(tags[0]) {
		probe = tags[0]
	}
	d, err := env.Registry.TagDigest(ctx, repo.Tag(probe))
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", repo, err)
	}
	if d == "" {
		return fmt.Sprintf("reachable; %s:%s does not exist yet", repo, probe), nil
	}
	return fmt.Sprintf("reachable; %s:%s points at %s today", repo, probe, d), nil
}

func hasTemplate(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '{' && s[i+1] == '{' {
			return true
		}
	}
	return false
}

// PushChecks asks, for every repository the run writes to (each build repository and
// target), whether relay's credentials may push there, without writing (oci PushAccess).
func PushChecks(ctx context.Context, env *Env) []Finding {
	var out []Finding
	seen := map[string]bool{}
	for _, im := range env.Config.Images {
		for _, r := range append([]string{env.Config.Builder.Registry + "/" + im.Name}, im.Targets...) {
			if seen[r] {
				continue
			}
			seen[r] = true
			f := Finding{Check: "push access to " + r, OK: true}
			repo, err := env.MapRepository(r)
			if err == nil {
				f.Note, err = env.Registry.PushAccess(ctx, repo)
			}
			if err != nil {
				f.OK, f.Note = false, err.Error()
			}
			out = append(out, f)
		}
	}
	return out
}
