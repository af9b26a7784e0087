package steps

import (
	"context"
	"fmt"
	"strings"

	"github.com/relaydev/relay/pkg/attach"
	"github.com/relaydev/relay/pkg/attest"
)

// Verify reads every target repository back and verifies, as a consumer would, that each
// digest is signed, each platform has its SBOMs and each image its provenance.
type Verify struct{}

// Name implements Step.
func (Verify) Name() string { return "verify" }

// Plan implements Step.
func (Verify) Plan(env *Env, st *State) Plan {
	p := Plan{Step: "verify", Done: st.Done("verify"), Missing: needCopies(env, st)}
	p.Does = []string{"read every target repository back and verify every signature and attestation against the trusted material; fail if any digest lacks one"}
	return p
}

// Check is one expectation about one digest in one repository.
type Check = attach.Check

// Expectations derives what must be attached from the config and the copies.
func Expectations(env *Env, st *State) []Check {
	var checks []Check
	for _, im := range env.Config.Images {
		for _, c := range st.CopiesOf(im.Name) {
			var all []string
			for _, d := range digestsOf(c) {
				all = append(all, d.digest)
				checks = append(checks, Check{Repository: c.Repository, Digest: d.digest, PredicateType: attest.PredicateSign})
			}
			if env.Config.SBOMEnabled() {
				for _, m := range c.Platforms {
					for _, f := range env.Config.SBOM.Formats {
						checks = append(checks, Check{Repository: c.Repository, Digest: m.Digest, PredicateType: formatPredicate[f]})
					}
				}
			}
			if env.Config.ProvenanceEnabled() {
				for _, a := range st.Assets { // the release.assets files the provenance names
					all = append(all, a.Digest())
				}
				checks = append(checks, Check{Repository: c.Repository, Digest: c.Digest, PredicateType: attest.PredicateSLSA, Subjects: all})
			}
		}
	}
	return checks
}

// Run implements Step.
func (Verify) Run(ctx context.Context, env *Env, st *State) error {
	checks := Expectations(env, st)
	res := &Verification{At: env.Now().UTC()}
	var problems []string
	for _, c := range checks {
		dups, err := env.attacher().VerifyBundle(ctx, c)
		res.Checked++
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		res.Verified = append(res.Verified, c.Repository+"@"+c.Digest+" "+c.PredicateType)
		for _, d := range dups {
			res.Duplicates = append(res.Duplicates, c.Repository+"@"+c.Digest+": "+d)
		}
	}
	if len(res.Duplicates) > 0 {
		// Harmless to a verifier; left by runs on different states that raced (one state
		// has one writer). Deleting referrers is the registry owner's call.
		env.Logger.Warn("duplicate referrers: valid attachments that say the same thing twice", "duplicates", res.Duplicates)
	}
	if env.Classic {
		for _, im := range env.Config.Images {
			for _, c := range st.CopiesOf(im.Name) {
				for _, d := range digestsOf(c) {
					res.Checked++
					if err := env.attacher().VerifyClassicSignature(ctx, c.Repository, d.digest); err != nil {
						problems = append(problems, err.Error())
						continue
					}
					res.Verified = append(res.Verified, c.Repository+"@"+d.digest+" cosign classic .sig")
				}
			}
		}
		for _, c := range checks {
			if c.PredicateType == attest.PredicateSign {
				continue
			}
			res.Checked++
			if err := env.attacher().VerifyClassicAttestation(ctx, c.Repository, c.Digest, c.PredicateType); err != nil {
				problems = append(problems, err.Error())
				continue
			}
			res.Verified = append(res.Verified, c.Repository+"@"+c.Digest+" "+c.PredicateType+" cosign classic .att")
		}
	}
	st.Verification = res
	if len(problems) > 0 {
		return fmt.Errorf("%d of %d checks failed:\n  %s", len(problems), len(checks), strings.Join(problems, "\n  "))
	}
	env.Logger.Info("verified", "checks", len(checks))
	return nil
}
