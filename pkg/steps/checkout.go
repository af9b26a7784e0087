package steps

import (
	"context"
	"path/filepath"

	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/source"
)

// Checkout clones the source at the configured ref.
type Checkout struct{}

// Name implements Step.
func (Checkout) Name() string { return "checkout" }

// Plan implements Step.
func (Checkout) Plan(env *Env, st *State) Plan {
	c := env.Config.Source
	return Plan{Step: "checkout", Done: st.Done("checkout"), Does: []string{
		"clone " + source.RedactURL(env.SourceRepo) + " at " + c.Ref + " into " + checkoutDir(env),
	}}
}

// Run implements Step.
func (Checkout) Run(ctx context.Context, env *Env, st *State) error {
	c := env.Config.Source
	r, err := source.Checkout(ctx, env.Logger, source.Options{
		Repo:  env.SourceRepo,
		Ref:   c.Ref,
		Depth: c.Depth,
		Token: env.SourceToken,
		Dir:   checkoutDir(env),
	})
	if err != nil {
		return err
	}
	// A tag template this release cannot fill fails now, before anything is pushed or signed.
	if _, err := env.Config.TagsFor(config.NewTagData(r.Tag, r.Commit)); err != nil {
		return err
	}
	// Record the page a consumer opens (source.url), never a path or --local's snapshot:
	// the images' label and the provenance carry it, and a path would make the same files
	// give other digests in another folder.
	r.Repo = c.URL
	st.Source = r
	return nil
}

func checkoutDir(env *Env) string { return filepath.Join(env.StateDir, "src") }
