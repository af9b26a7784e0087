package attach

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

// DigestReport is what verification found for one manifest of an image.
type DigestReport struct {
	Digest   string `json:"digest"`
	Platform string `json:"platform,omitempty"` // empty for the index
	// Signers of the valid signatures; Attestations the predicate types of valid ones.
	Signers      []string `json:"signers,omitempty"`
	Attestations []string `json:"attestations,omitempty"`
	// Rejected says why attached bundles failed (wrong identity, bad signature, ...).
	Rejected []string `json:"rejected,omitempty"`
	// Duplicates are valid referrers that say what another one already says (same
	// predicate, statement and signer): left by two runs that raced.
	Duplicates []string `json:"duplicates,omitempty"`
}

// ImageReport is the verification of an image: its index and every platform manifest.
type ImageReport struct {
	Image   string         `json:"image"`
	Digests []DigestReport `json:"digests"`
}

// VerifyImage is a consumer's check of an image, independent of any relay state: every
// manifest (the index and each platform) must carry a signature that verifies against the
// trust material and identity policy in v; attestations that verify are listed with it.
// It fails when any manifest has no valid signature. cosign's classic sha256-<hex>.sig
// signatures count too when they verify against the same trust and identity.
func VerifyImage(ctx context.Context, reg *oci.Client, v *attest.Verifier, ref name.Reference) (*ImageReport, error) {
	a := &Attacher{Registry: reg, Verifier: v}
	r, err := reg.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	repo := ref.Context()
	rep := &ImageReport{Image: repo.Digest(r.Digest).String()}
	targets := []DigestReport{{Digest: r.Digest}}
	if len(r.Manifests) > 1 || (len(r.Manifests) == 1 && r.Manifests[0].Digest != r.Digest) {
		for _, m := range r.Manifests {
			targets = append(targets, DigestReport{Digest: m.Digest, Platform: m.Platform})
		}
	} else if len(r.Manifests) == 1 {
		targets[0].Platform = r.Manifests[0].Platform
	}
	var missing []string
	for _, t := range targets {
		atts, err := reg.Bundles(ctx, repo.Digest(t.Digest), "")
		if err != nil {
			return nil, err
		}
		var dups duplicates
		for _, a := range atts {
			res, err := v.VerifyStatement(ctx, a.Bundle, t.Digest, "")
			if err != nil {
				t.Rejected = append(t.Rejected, fmt.Sprintf("%s (%s): %v", a.Digest, a.PredicateType, err))
				continue
			}
			dups.add(res)
			if res.PredicateType == attest.PredicateSign {
				t.Signers = appendOnce(t.Signers, res.Signer)
			} else {
				t.Attestations = appendOnce(t.Attestations, res.PredicateType)
			}
		}
		{
			var rej *ClassicRejectedError
			switch who, err := a.classicSignedBy(ctx, repo.Digest(t.Digest)); {
			case err == nil:
				t.Signers = appendOnce(t.Signers, who+" (cosign classic .sig)")
			case errors.As(err, &rej):
				t.Rejected = append(t.Rejected, err.Error())
			case !errors.Is(err, ErrNoClassic):
				return nil, err
			}
		}
		cas, err := reg.ClassicAttestations(ctx, repo.Digest(t.Digest))
		if err != nil {
			return nil, err
		}
		for _, a := range cas {
			res, err := v.VerifyClassicAttestation(ctx, a, t.Digest, "")
			if err != nil {
				t.Rejected = append(t.Rejected, fmt.Sprintf("cosign classic .att (%s): %v", a.PredicateType, err))
				continue
			}
			t.Attestations = appendOnce(t.Attestations, res.PredicateType+" (cosign classic .att)")
		}
		sort.Strings(t.Attestations)
		t.Duplicates = dups.report()
		rep.Digests = append(rep.Digests, t)
		if len(t.Signers) == 0 {
			what := t.Digest
			if t.Platform != "" {
				what += " (" + t.Platform + ")"
			}
			why := "nothing is attached"
			if len(t.Rejected) > 0 {
				why = fmt.Sprintf("%d attached signature(s) or attestation(s), none a valid signature: %s", len(t.Rejected), strings.Join(t.Rejected, "; "))
			} else if len(atts) > 0 {
				why = fmt.Sprintf("%d attestation(s) but no signature", len(atts))
			}
			missing = append(missing, what+": "+why)
		}
	}
	if len(missing) > 0 {
		return rep, &UnverifiedError{Image: rep.Image, Problems: missing}
	}
	return rep, nil
}

// UnverifiedError lists the manifests of an image without a valid signature.
type UnverifiedError struct {
	Image    string
	Problems []string
}

func (e *UnverifiedError) Error() string {
	return fmt.Sprintf("%s is not verified: %d manifest(s) lack a valid signature:\n  %s", e.Image, len(e.Problems), strings.Join(e.Problems, "\n  "))
}

func appendOnce(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}
