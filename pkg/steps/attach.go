package steps

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/relaydev/relay/pkg/attest"
)

// attachRequest is one statement about one digest, to exist once in every target.
type attachRequest struct {
	image         string
	platform      string
	subject       string // digest
	predicateType string
	kind          string // file-name fragment: sig, spdx, cyclonedx, provenance
	// statement builds the statement to sign; called only when no valid one is attached.
	statement func(ctx context.Context) ([]byte, error)
	// accept, when set, decides whether a valid attached statement is the one this run
	// would write; one it refuses is left alone and a new one is attached.
	accept func(*attest.Verified) bool
}

// ensureAttached makes sure every target repository of the image holds a valid bundle for
// the request. A bundle already attached that verifies against the run's trust material is
// reused and copied to targets that lack it, so a re-run never adds a duplicate referrer.
func ensureAttached(ctx context.Context, env *Env, copies []CopiedImage, req attachRequest) (*Attestation, []byte, error) {
	if len(copies) == 0 {
		return nil, nil, fmt.Errorf("image %s has no copies to attach to", req.image)
	}
	existing := map[string]string{} // repository -> referrer already holding a valid bundle
	var chosen []byte
	for _, c := range copies {
		repo, err := name.NewRepository(c.Repository)
		if err != nil {
			return nil, nil, err
		}
		atts, err := env.Registry.Bundles(ctx, repo.Digest(req.subject), req.predicateType)
		if err != nil {
			return nil, nil, err
		}
		for _, a := range atts {
			v, err := env.Verifier.VerifyStatement(ctx, a.Bundle, req.subject, req.predicateType)
			if err != nil {
				env.Logger.Debug("ignoring attached bundle that does not verify", "image", c.Repository, "digest", req.subject, "referrer", a.Digest, "error", err)
				continue
			}
			if req.accept != nil && !req.accept(v) {
				env.Logger.Info("attached statement is not this run's: not reused", "image", c.Repository, "digest", req.subject, "predicate_type", req.predicateType, "referrer", a.Digest)
				continue
			}
			existing[c.Repository] = a.Digest
			if chosen == nil {
				chosen = a.Bundle
			}
			break
		}
	}
	reused := chosen != nil
	if !reused {
		stmt, err := req.statement(ctx)
		if err != nil {
			return nil, nil, err
		}
		chosen, err = env.Signer.SignStatement(ctx, stmt)
		if err != nil {
			return nil, nil, fmt.Errorf("signing %s of %s: %w", req.kind, req.subject, err)
		}
	}
	att := &Attestation{
		Image: req.image, Subject: req.subject, Platform: req.platform, PredicateType: req.predicateType,
		Referrers: map[string]string{}, Reused: reused,
	}
	for _, c := range copies {
		if ref, ok := existing[c.Repository]; ok {
			att.Referrers[c.Repository] = ref
			continue
		}
		repo, _ := name.NewRepository(c.Repository)
		subj := repo.Digest(req.subject)
		raw, mt, err := env.Registry.FetchManifest(ctx, subj)
		if err != nil {
			return nil, nil, err
		}
		ref, err := env.Registry.AttachBundle(ctx, subj, mt, int64(len(raw)), chosen, "dsse-envelope", req.predicateType)
		if err != nil {
			return nil, nil, err
		}
		att.Referrers[c.Repository] = ref
	}
	if env.Classic && req.predicateType != attest.PredicateSign {
		if err := ensureClassicAttestation(ctx, env, copies, req.subject, req.predicateType, chosen); err != nil {
			return nil, nil, err
		}
	}
	sum := sha256.Sum256(chosen)
	att.BundleDigest = fmt.Sprintf("sha256:%x", sum)
	att.Bundle = filepath.Join("attestations", fmt.Sprintf("%s-%s-%s.sigstore.json", req.image, shortHex(req.subject), req.kind))
	if err := WriteFileAtomic(filepath.Join(env.StateDir, att.Bundle), chosen, 0o644); err != nil {
		return nil, nil, err
	}
	env.Logger.Info("attached", "image", req.image, "digest", req.subject, "predicate_type", req.predicateType, "reused", reused, "targets", len(copies))
	return att, chosen, nil
}

func shortHex(d string) string {
	_, h, _ := strings.Cut(d, ":")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}
