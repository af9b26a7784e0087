package steps

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/oci"
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
type Check struct {
	Repository    string
	Digest        string
	PredicateType string
	// Subjects, when set, must equal the statement's subject digests exactly.
	Subjects []string
}

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
		dups, err := verifyOne(ctx, env, c)
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
					if err := verifyClassic(ctx, env, c.Repository, d.digest); err != nil {
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
			repo, err := name.NewRepository(c.Repository)
			if err != nil {
				return err
			}
			if err := classicAttestationValid(ctx, env.Registry, repo.Digest(c.Digest), env.Verifier, c.PredicateType); err != nil {
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

// VerifyOne finds a bundle for the check that verifies; other bundles are ignored.
func VerifyOne(ctx context.Context, env *Env, c Check) error {
	_, err := verifyOne(ctx, env, c)
	return err
}

// verifyOne is VerifyOne that also reports valid bundles repeating one another.
func verifyOne(ctx context.Context, env *Env, c Check) ([]string, error) {
	repo, err := name.NewRepository(c.Repository)
	if err != nil {
		return nil, err
	}
	atts, err := env.Registry.Bundles(ctx, repo.Digest(c.Digest), c.PredicateType)
	if err != nil {
		return nil, err
	}
	if len(atts) == 0 {
		return nil, fmt.Errorf("%s@%s: no %s attached", c.Repository, c.Digest, c.PredicateType)
	}
	var errs []error
	var dups duplicates
	found := false
	for _, a := range atts {
		v, err := env.Verifier.VerifyStatement(ctx, a.Bundle, c.Digest, c.PredicateType)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if c.Subjects != nil {
			var got []string
			for _, s := range v.Statement.Subject {
				for algo, h := range s.Digest {
					got = append(got, algo+":"+h)
				}
			}
			want := append([]string(nil), c.Subjects...)
			sort.Strings(got)
			sort.Strings(want)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				errs = append(errs, fmt.Errorf("subjects %v, want %v", got, want))
				continue
			}
		}
		found = true
		dups.add(v)
	}
	if found {
		return dups.report(), nil
	}
	return nil, fmt.Errorf("%s@%s: no valid %s: %w", c.Repository, c.Digest, c.PredicateType, errors.Join(errs...))
}

func verifyClassic(ctx context.Context, env *Env, repository, digest string) error {
	repo, err := name.NewRepository(repository)
	if err != nil {
		return err
	}
	return classicValid(ctx, env.Registry, repo.Digest(digest), env.Verifier)
}

// errNoClassic is a digest without any cosign classic .sig signature.
var errNoClassic = errors.New("no cosign classic .sig signature")

// classicRejectedError is a digest whose classic signatures all failed to verify.
type classicRejectedError struct {
	digest string
	errs   []error
}

func (e *classicRejectedError) Error() string {
	return fmt.Sprintf("%s: no valid cosign classic .sig signature (%d found): %v", e.digest, len(e.errs), errors.Join(e.errs...))
}

// classicValid finds a cosign classic .sig signature of d that verifies with v. It
// returns errNoClassic when there is none, a *classicRejectedError when none verifies, and
// the registry's error when it cannot tell.
func classicValid(ctx context.Context, reg *oci.Client, d name.Digest, v *attest.Verifier) error {
	_, err := classicSignedBy(ctx, reg, d, v)
	return err
}

// classicSignedBy is classicValid that also names who signed.
func classicSignedBy(ctx context.Context, reg *oci.Client, d name.Digest, v *attest.Verifier) (string, error) {
	sigs, err := reg.ClassicSignatures(ctx, d)
	if err != nil {
		return "", err
	}
	if len(sigs) == 0 {
		return "", fmt.Errorf("%s: %w", d, errNoClassic)
	}
	rej := &classicRejectedError{digest: d.String()}
	for _, s := range sigs {
		who, err := v.VerifyClassic(ctx, s, d.DigestStr())
		if err != nil {
			rej.errs = append(rej.errs, err)
			continue
		}
		return who, nil
	}
	return "", rej
}

// classicAttestationValid finds a classic .att attestation of d with the predicate type that
// verifies with v.
func classicAttestationValid(ctx context.Context, reg *oci.Client, d name.Digest, v *attest.Verifier, predicateType string) error {
	atts, err := reg.ClassicAttestations(ctx, d)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range atts {
		if _, err := v.VerifyClassicAttestation(ctx, a, d.DigestStr(), predicateType); err != nil {
			errs = append(errs, err)
			continue
		}
		return nil
	}
	return fmt.Errorf("%s: no valid cosign classic .att with %s (%d found): %w", d, predicateType, len(atts), errors.Join(errs...))
}
