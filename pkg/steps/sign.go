package steps

import (
	"context"
	"fmt"

	"github.com/relaydev/relay/pkg/attest"
)

// Sign signs the index and every platform manifest of every image, by digest.
type Sign struct{}

// Name implements Step.
func (Sign) Name() string { return "sign" }

// Plan implements Step.
func (Sign) Plan(env *Env, st *State) Plan {
	p := Plan{Step: "sign", Done: st.Done("sign")}
	p.Missing = needCopies(env, st)
	signer := env.Config.Signing.Mode
	if env.Signer != nil {
		signer = env.Signer.Identity()
	}
	for _, im := range env.Config.Images {
		p.Does = append(p.Does, fmt.Sprintf("sign %s (index and each platform manifest, by digest) with %s; attach as OCI referrers in every target", im.Name, signer))
	}
	return p
}

func needCopies(env *Env, st *State) []string {
	var missing []string
	for _, im := range env.Config.Images {
		if len(st.CopiesOf(im.Name)) == 0 {
			missing = append(missing, "the copies of "+im.Name+" (step copy)")
		}
	}
	return missing
}

// digestsOf lists the index (or single manifest) first, then each platform manifest.
func digestsOf(c CopiedImage) []struct{ digest, platform string } {
	out := []struct{ digest, platform string }{{c.Digest, ""}}
	for _, m := range c.Platforms {
		if m.Digest != c.Digest {
			out = append(out, struct{ digest, platform string }{m.Digest, m.Platform})
		}
	}
	return out
}

// Run implements Step.
func (Sign) Run(ctx context.Context, env *Env, st *State) error {
	var out []Attestation
	for _, im := range env.Config.Images {
		copies := st.CopiesOf(im.Name)
		for _, d := range digestsOf(copies[0]) {
			subject := attest.Subject{Name: copies[0].Repository, Digest: d.digest}
			att, _, err := ensureAttached(ctx, env, copies, attachRequest{
				image: im.Name, platform: d.platform, subject: d.digest, predicateType: attest.PredicateSign, kind: "sig",
				statement: func(context.Context) ([]byte, error) {
					return attest.Statement([]attest.Subject{subject}, attest.PredicateSign, nil)
				},
			})
			if err != nil {
				return err
			}
			out = append(out, *att)
		}
	}
	st.Signatures = out
	return nil
}
