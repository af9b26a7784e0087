package attest

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"

	intoto "github.com/in-toto/attestation/go/v1"
)

// Verifier checks bundles against trust material and, for keyless bundles, an identity policy.
type Verifier struct {
	v        *verify.Verifier
	identity *verify.CertificateIdentity
	keyed    bool
}

// NewKeyVerifier verifies bundles signed by the key in tm, without a transparency log
// (the --local and key-signing case).
func NewKeyVerifier(tm root.TrustedMaterial) (*Verifier, error) {
	v, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	if err != nil {
		return nil, err
	}
	return &Verifier{v: v, keyed: true}, nil
}

// Verified is what a successful verification proves.
type Verified struct {
	PredicateType string
	Statement     *intoto.Statement
	Signer        string
}

// ErrWrongPredicate is returned when a bundle is valid but about another predicate.
var ErrWrongPredicate = errors.New("statement has another predicate type")

// VerifyStatement checks a bundle's signature, that its statement names digest among its
// subjects, and that its predicate type is predicateType (any when empty).
func (v *Verifier) VerifyStatement(bundleJSON []byte, digest, predicateType string) (*Verified, error) {
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return nil, fmt.Errorf("parsing bundle: %w", err)
	}
	algo, hx, ok := strings.Cut(digest, ":")
	if !ok {
		return nil, fmt.Errorf("digest %q is not ALGO:HEX", digest)
	}
	raw, err := hex.DecodeString(hx)
	if err != nil {
		return nil, fmt.Errorf("digest %q: %w", digest, err)
	}
	var opts []verify.PolicyOption
	if v.keyed {
		opts = append(opts, verify.WithKey())
	} else if v.identity != nil {
		opts = append(opts, verify.WithCertificateIdentity(*v.identity))
	}
	res, err := v.v.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest(algo, raw), opts...))
	if err != nil {
		return nil, fmt.Errorf("verifying bundle for %s: %w", digest, err)
	}
	if res.Statement == nil {
		return nil, fmt.Errorf("bundle for %s holds no in-toto statement", digest)
	}
	if predicateType != "" && res.Statement.PredicateType != predicateType {
		return nil, fmt.Errorf("%w: %s, want %s", ErrWrongPredicate, res.Statement.PredicateType, predicateType)
	}
	out := &Verified{PredicateType: res.Statement.PredicateType, Statement: res.Statement}
	if res.Signature != nil && res.Signature.Certificate != nil {
		out.Signer = res.Signature.Certificate.SubjectAlternativeName
	} else if res.VerifiedIdentity == nil {
		out.Signer = "key"
	}
	return out, nil
}

// Predicate returns the predicate type and the predicate (canonical JSON) of the in-toto
// statement inside a bundle. It does not verify: call VerifyStatement first.
func Predicate(bundleJSON []byte) (string, []byte, error) {
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return "", nil, fmt.Errorf("parsing bundle: %w", err)
	}
	env, err := b.Envelope()
	if err != nil {
		return "", nil, fmt.Errorf("bundle holds no DSSE envelope: %w", err)
	}
	st, err := env.Statement()
	if err != nil {
		return "", nil, fmt.Errorf("bundle's envelope holds no in-toto statement: %w", err)
	}
	if st.Predicate == nil {
		return st.PredicateType, []byte("{}"), nil
	}
	p, err := canonical(st.Predicate)
	return st.PredicateType, p, err
}
