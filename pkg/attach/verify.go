package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/pkg/attest"
)

// Check is one expectation about one digest in one repository.
type Check struct {
	Repository    string
	Digest        string
	PredicateType string
	// Subjects, when set, must equal the statement's subject digests exactly.
	Subjects []string
}

// VerifyBundle finds a bundle for the check that verifies; other bundles are ignored. It
// also names the valid bundles that repeat one another (two runs that raced).
func (a *Attacher) VerifyBundle(ctx context.Context, c Check) (duplicated []string, err error) {
	repo, err := name.NewRepository(c.Repository)
	if err != nil {
		return nil, err
	}
	atts, err := a.Registry.Bundles(ctx, repo.Digest(c.Digest), c.PredicateType)
	if err != nil {
		return nil, err
	}
	if len(atts) == 0 {
		return nil, fmt.Errorf("%s@%s: no %s attached", c.Repository, c.Digest, c.PredicateType)
	}
	var errs []error
	var dups duplicates
	found := false
	for _, att := range atts {
		v, err := a.Verifier.VerifyStatement(ctx, att.Bundle, c.Digest, c.PredicateType)
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

// VerifyClassicSignature finds a cosign classic .sig signature of repository@digest that
// verifies.
func (a *Attacher) VerifyClassicSignature(ctx context.Context, repository, digest string) error {
	repo, err := name.NewRepository(repository)
	if err != nil {
		return err
	}
	_, err = a.classicSignedBy(ctx, repo.Digest(digest))
	return err
}

// ErrNoClassic is a digest without any cosign classic .sig signature.
var ErrNoClassic = errors.New("no cosign classic .sig signature")

// ClassicRejectedError is a digest whose classic signatures all failed to verify.
type ClassicRejectedError struct {
	Digest string
	Errs   []error
}

func (e *ClassicRejectedError) Error() string {
	return fmt.Sprintf("%s: no valid cosign classic .sig signature (%d found): %v", e.Digest, len(e.Errs), errors.Join(e.Errs...))
}

// classicSignedBy names who made a classic .sig signature of d that verifies. It returns
// ErrNoClassic when there is none, a *ClassicRejectedError when none verifies, and the
// registry's error when it cannot tell.
func (a *Attacher) classicSignedBy(ctx context.Context, d name.Digest) (string, error) {
	sigs, err := a.Registry.ClassicSignatures(ctx, d)
	if err != nil {
		return "", err
	}
	if len(sigs) == 0 {
		return "", fmt.Errorf("%s: %w", d, ErrNoClassic)
	}
	rej := &ClassicRejectedError{Digest: d.String()}
	for _, s := range sigs {
		who, err := a.Verifier.VerifyClassic(ctx, s, d.DigestStr())
		if err != nil {
			rej.Errs = append(rej.Errs, err)
			continue
		}
		return who, nil
	}
	return "", rej
}

// VerifyClassicAttestation finds a classic .att attestation of repository@digest with the
// predicate type that verifies.
func (a *Attacher) VerifyClassicAttestation(ctx context.Context, repository, digest, predicateType string) error {
	repo, err := name.NewRepository(repository)
	if err != nil {
		return err
	}
	d := repo.Digest(digest)
	atts, err := a.Registry.ClassicAttestations(ctx, d)
	if err != nil {
		return err
	}
	var errs []error
	for _, att := range atts {
		if _, err := a.Verifier.VerifyClassicAttestation(ctx, att, digest, predicateType); err != nil {
			errs = append(errs, err)
			continue
		}
		return nil
	}
	return fmt.Errorf("%s: no valid cosign classic .att with %s (%d found): %w", d, predicateType, len(atts), errors.Join(errs...))
}

// duplicates counts valid statements that repeat one already seen.
type duplicates struct {
	seen  map[string]int
	order []string
	name  map[string]string
}

func (d *duplicates) add(v *attest.Verified) {
	if d.seen == nil {
		d.seen, d.name = map[string]int{}, map[string]string{}
	}
	b, _ := json.Marshal(v.Statement)
	k := v.PredicateType + "\x00" + v.Signer + "\x00" + string(b)
	if d.seen[k] == 0 {
		d.order = append(d.order, k)
		d.name[k] = v.PredicateType
	}
	d.seen[k]++
}

// report lists each repeated statement as "PREDICATE (N referrers say the same)".
func (d *duplicates) report() []string {
	var out []string
	for _, k := range d.order {
		if n := d.seen[k]; n > 1 {
			out = append(out, fmt.Sprintf("%s (%d referrers say the same)", d.name[k], n))
		}
	}
	return out
}
