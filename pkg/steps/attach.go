package steps

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/relaydev/relay/pkg/attach"
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

// attacher is pkg/attach with the run's registry, trust and signer.
func (env *Env) attacher() *attach.Attacher {
	return &attach.Attacher{Registry: env.Registry, Verifier: env.Verifier, Signer: env.Signer, Logger: env.Logger}
}

// repositories are the target repositories of an image's copies.
func repositories(copies []CopiedImage) []string {
	out := make([]string, 0, len(copies))
	for _, c := range copies {
		out = append(out, c.Repository)
	}
	return out
}

// ensureAttached makes sure every target repository of the image holds a valid bundle for
// the request (pkg/attach reuses one already attached, so a re-run adds no duplicate),
// also as cosign's classic .att where the run writes classic, and keeps the bundle in the
// state directory for the release.
func ensureAttached(ctx context.Context, env *Env, copies []CopiedImage, req attachRequest) (*Attestation, []byte, error) {
	if len(copies) == 0 {
		return nil, nil, fmt.Errorf("image %s has no copies to attach to", req.image)
	}
	repos := repositories(copies)
	a := env.attacher()
	res, err := a.Ensure(ctx, repos, attach.Request{Subject: req.subject, PredicateType: req.predicateType, What: req.kind + " of " + req.subject,
		Statement: req.statement, Accept: req.accept})
	if err != nil {
		return nil, nil, err
	}
	if env.Classic && req.predicateType != attest.PredicateSign {
		if err := a.EnsureClassicAttestation(ctx, repos, req.subject, req.predicateType, res.Bundle); err != nil {
			return nil, nil, err
		}
	}
	att := &Attestation{
		Image: req.image, Subject: req.subject, Platform: req.platform, PredicateType: req.predicateType,
		Referrers: res.Referrers, Reused: res.Reused,
	}
	sum := sha256.Sum256(res.Bundle)
	att.BundleDigest = fmt.Sprintf("sha256:%x", sum)
	att.Bundle = filepath.Join("attestations", fmt.Sprintf("%s-%s-%s.sigstore.json", req.image, shortHex(req.subject), req.kind))
	if err := WriteFileAtomic(filepath.Join(env.StateDir, att.Bundle), res.Bundle, 0o644); err != nil {
		return nil, nil, err
	}
	env.Logger.Info("attached", "image", req.image, "digest", req.subject, "predicate_type", req.predicateType, "reused", res.Reused, "targets", len(copies))
	return att, res.Bundle, nil
}

func shortHex(d string) string {
	_, h, _ := strings.Cut(d, ":")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}
