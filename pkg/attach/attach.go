// Package attach finds, attaches, reuses and verifies what is attached to an image
// digest: Sigstore bundles as OCI referrers (or, on registries without the referrers API,
// in the tag schema), and cosign's classic sha256-<hex>.sig and .att images. The pipeline's
// sign, sbom, provenance and verify steps use it, and so does a consumer's relay verify
// IMAGE, which needs no pipeline.
package attach

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/oci"
)

// Attacher attaches and checks statements with one registry client and one trust.
type Attacher struct {
	Registry *oci.Client
	// Verifier decides which attached bundles count: a bundle that verifies is reused.
	Verifier *attest.Verifier
	Signer   attest.Signer // nil: verify only
	Logger   *slog.Logger
}

func (a *Attacher) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

// Request is one statement about one digest, to exist once in every repository.
type Request struct {
	Subject       string // digest
	PredicateType string
	// What names the statement in errors ("the signature of sha256:...").
	What string
	// Statement builds the statement to sign; called only when no valid one is attached.
	Statement func(ctx context.Context) ([]byte, error)
	// Accept, when set, decides whether a valid attached statement is the one this run
	// would write; one it refuses is left alone and a new one is attached.
	Accept func(*attest.Verified) bool
}

// Result is what Ensure left attached.
type Result struct {
	Bundle    []byte            // the bundle every repository now holds
	Referrers map[string]string // repository -> the referrer's digest
	Reused    bool              // an attached bundle was reused: nothing was signed
}

// Ensure makes every repository hold a valid bundle for req. A bundle already attached
// somewhere that verifies (and that Accept takes) is reused and copied to the
// repositories that lack it, so a re-run never adds a duplicate referrer; otherwise the
// statement is signed once and attached everywhere.
func (a *Attacher) Ensure(ctx context.Context, repositories []string, req Request) (*Result, error) {
	if len(repositories) == 0 {
		return nil, fmt.Errorf("%s: no repository to attach to", req.What)
	}
	res := &Result{Referrers: map[string]string{}}
	for _, r := range repositories {
		repo, err := name.NewRepository(r)
		if err != nil {
			return nil, err
		}
		atts, err := a.Registry.Bundles(ctx, repo.Digest(req.Subject), req.PredicateType)
		if err != nil {
			return nil, err
		}
		for _, att := range atts {
			v, err := a.Verifier.VerifyStatement(ctx, att.Bundle, req.Subject, req.PredicateType)
			if err != nil {
				a.logger().Debug("ignoring attached bundle that does not verify", "image", r, "digest", req.Subject, "referrer", att.Digest, "error", err)
				continue
			}
			if req.Accept != nil && !req.Accept(v) {
				a.logger().Info("attached statement is not this run's: not reused", "image", r, "digest", req.Subject, "predicate_type", req.PredicateType, "referrer", att.Digest)
				continue
			}
			res.Referrers[r] = att.Digest
			if res.Bundle == nil {
				res.Bundle = att.Bundle
			}
			break
		}
	}
	res.Reused = res.Bundle != nil
	if !res.Reused {
		if a.Signer == nil {
			return nil, fmt.Errorf("%s: nothing valid is attached and there is no signer", req.What)
		}
		stmt, err := req.Statement(ctx)
		if err != nil {
			return nil, err
		}
		if res.Bundle, err = a.Signer.SignStatement(ctx, stmt); err != nil {
			return nil, fmt.Errorf("signing %s: %w", req.What, err)
		}
	}
	for _, r := range repositories {
		if _, ok := res.Referrers[r]; ok {
			continue
		}
		repo, _ := name.NewRepository(r)
		subj := repo.Digest(req.Subject)
		raw, mt, err := a.Registry.FetchManifest(ctx, subj)
		if err != nil {
			return nil, err
		}
		ref, err := a.Registry.AttachBundle(ctx, subj, mt, int64(len(raw)), res.Bundle, "dsse-envelope", req.PredicateType)
		if err != nil {
			return nil, err
		}
		res.Referrers[r] = ref
	}
	return res, nil
}

// classicSigner signs cosign's classic simple-signing payloads: key signers, and keyless
// signers whose signing config has a Rekor v1 log.
type classicSigner interface {
	SignClassic(ctx context.Context, payload []byte) (*oci.ClassicSignature, error)
	// ClassicAttestation turns one of its attestation bundles into a classic .att layer.
	ClassicAttestation(bundleJSON []byte) (*oci.ClassicSignature, error)
}

func (a *Attacher) classicSigner() (classicSigner, error) {
	cs, ok := a.Signer.(classicSigner)
	if !ok || a.Signer == nil {
		who := "this signer"
		if a.Signer != nil {
			who = a.Signer.Identity()
		}
		return nil, fmt.Errorf("signing.classic: %s cannot make cosign classic signatures", who)
	}
	return cs, nil
}

// EnsureClassicSignature gives digest a classic cosign .sig signature in every
// repository, unless one that verifies against the trust (key, or certificate identity)
// is there already.
func (a *Attacher) EnsureClassicSignature(ctx context.Context, repositories []string, digest string) error {
	cs, err := a.classicSigner()
	if err != nil {
		return err
	}
	for _, r := range repositories {
		repo, err := name.NewRepository(r)
		if err != nil {
			return err
		}
		d := repo.Digest(digest)
		if _, err := a.classicSignedBy(ctx, d); err == nil {
			continue
		}
		payload, err := attest.SimpleSigningPayload(r, digest)
		if err != nil {
			return err
		}
		sig, err := cs.SignClassic(ctx, payload)
		if err != nil {
			return fmt.Errorf("classic signature of %s: %w", d, err)
		}
		if err := a.Registry.AddClassicSignature(ctx, d, *sig); err != nil {
			return err
		}
		a.logger().Info("classic signature attached", "image", r, "digest", digest)
	}
	return nil
}

// EnsureClassicAttestation puts the attestation bundle, as cosign's classic .att layer, in
// every repository, unless a classic attestation of the same predicate that verifies is
// there already.
func (a *Attacher) EnsureClassicAttestation(ctx context.Context, repositories []string, digest, predicateType string, bundle []byte) error {
	cs, err := a.classicSigner()
	if err != nil {
		return err
	}
	var att *oci.ClassicSignature
	for _, r := range repositories {
		if a.VerifyClassicAttestation(ctx, r, digest, predicateType) == nil {
			continue
		}
		repo, err := name.NewRepository(r)
		if err != nil {
			return err
		}
		d := repo.Digest(digest)
		if att == nil {
			if att, err = cs.ClassicAttestation(bundle); err != nil {
				return fmt.Errorf("classic attestation of %s: %w", d, err)
			}
			att.PredicateType = predicateType
		}
		if err := a.Registry.AddClassicAttestation(ctx, d, *att); err != nil {
			return err
		}
		a.logger().Info("classic attestation attached", "image", r, "digest", digest, "predicate_type", predicateType)
	}
	return nil
}
