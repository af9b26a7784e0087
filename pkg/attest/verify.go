package attest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"

	intoto "github.com/in-toto/attestation/go/v1"
)

// Verifier checks bundles against trust material and, for keyless bundles, an identity policy.
type Verifier struct {
	v        *verify.Verifier
	identity *verify.CertificateIdentity
	keyed    bool

	// lazy builds the verifier on first use (the run's own keyless identity is known only
	// once Fulcio certified it).
	lazy  func(context.Context) (*Verifier, error)
	mu    sync.Mutex
	inner *Verifier // what lazy built; a failure is not kept, so the next call asks again

	// anyOf accepts what one of them accepts (AnyVerifier).
	anyOf []*Verifier
}

// AnyVerifier accepts a bundle or classic signature that one of vs accepts, tried in
// order: a dry run's stand-in key beside the real key, whose signatures a real run
// already attached.
func AnyVerifier(vs ...*Verifier) *Verifier { return &Verifier{anyOf: vs} }

// firstOf returns the first of v.anyOf's answers that is not an error, else every error.
func firstOf[T any](vs []*Verifier, try func(*Verifier) (T, error)) (T, error) {
	var errs []error
	for _, x := range vs {
		r, err := try(x)
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
	}
	var zero T
	return zero, errors.Join(errs...)
}

// NewSignerVerifier verifies keyless bundles against tm and the identity of s's own
// certificate: the pipeline checks that what it published carries this run's identity, and
// reuses an attached bundle only if it does.
func NewSignerVerifier(tm root.TrustedMaterial, s *KeylessSigner, noTransparencyLog bool) *Verifier {
	return &Verifier{lazy: func(ctx context.Context) (*Verifier, error) {
		p, err := s.Policy(ctx)
		if err != nil {
			return nil, err
		}
		p.NoTransparencyLog = noTransparencyLog
		return NewIdentityVerifier(tm, p)
	}}
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

// NewKeyLogVerifier verifies bundles signed by the key in keyTM that also carry an entry
// of a transparency log that logTM trusts, as cosign verify --key checks by default.
func NewKeyLogVerifier(keyTM, logTM root.TrustedMaterial) (*Verifier, error) {
	v, err := verify.NewVerifier(root.TrustedMaterialCollection{keyTM, logTM}, verify.WithTransparencyLog(1), verify.WithNoObserverTimestamps())
	if err != nil {
		return nil, err
	}
	return &Verifier{v: v, keyed: true}, nil
}

// IdentityPolicy is who must have signed a keyless bundle: the certificate's subject (an
// email or a workflow URI) and the OIDC issuer that vouched for it, each exact or a regexp.
type IdentityPolicy struct {
	Identity, IdentityRegexp string
	Issuer, IssuerRegexp     string
	// NoTransparencyLog accepts bundles without a Rekor entry (signed timestamps only), for
	// private repositories that keep their names out of the public log.
	NoTransparencyLog bool
}

// Validate says what is missing: a keyless verification without an identity would accept
// any certificate Fulcio ever issued.
func (p IdentityPolicy) Validate() error {
	if p.Identity == "" && p.IdentityRegexp == "" {
		return errors.New("keyless verification needs --certificate-identity or --certificate-identity-regexp: without one, any Sigstore user's signature would pass")
	}
	if p.Issuer == "" && p.IssuerRegexp == "" {
		return errors.New("keyless verification needs --certificate-oidc-issuer or --certificate-oidc-issuer-regexp (GitHub Actions: https://token.actions.githubusercontent.com)")
	}
	return nil
}

// NewIdentityVerifier verifies keyless bundles against tm (Fulcio roots, Rekor keys, TSA
// chains) and the identity policy: a certificate chain to a trusted Fulcio, a signed time
// inside the certificate's validity (TSA or Rekor), a Rekor entry unless the policy waives
// it, and SCTs when the trusted root lists CT logs.
func NewIdentityVerifier(tm root.TrustedMaterial, p IdentityPolicy) (*Verifier, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	id, err := verify.NewShortCertificateIdentity(p.Issuer, p.IssuerRegexp, p.Identity, p.IdentityRegexp)
	if err != nil {
		return nil, fmt.Errorf("identity policy: %w", err)
	}
	opts := []verify.VerifierOption{verify.WithObserverTimestamps(1)}
	if !p.NoTransparencyLog {
		opts = append(opts, verify.WithTransparencyLog(1))
	}
	if len(tm.CTLogs()) > 0 {
		opts = append(opts, verify.WithSignedCertificateTimestamps(1))
	}
	v, err := verify.NewVerifier(tm, opts...)
	if err != nil {
		return nil, err
	}
	return &Verifier{v: v, identity: &id}, nil
}

// Verified is what a successful verification proves.
type Verified struct {
	PredicateType string
	Statement     *intoto.Statement
	Signer        string
}

// ErrWrongPredicate is returned when a bundle is valid but about another predicate.
var ErrWrongPredicate = errors.New("statement has another predicate type")

// resolve builds a lazy verifier on the caller's context; an error (Fulcio down, the run
// cancelled) is returned, not kept, so a later call may succeed.
func (v *Verifier) resolve(ctx context.Context) (*Verifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.inner == nil {
		inner, err := v.lazy(ctx)
		if err != nil {
			return nil, err
		}
		v.inner = inner
	}
	return v.inner, nil
}

// VerifyStatement checks a bundle's signature, that its statement names digest among its
// subjects, and that its predicate type is predicateType (any when empty).
func (v *Verifier) VerifyStatement(ctx context.Context, bundleJSON []byte, digest, predicateType string) (*Verified, error) {
	if v.anyOf != nil {
		return firstOf(v.anyOf, func(x *Verifier) (*Verified, error) { return x.VerifyStatement(ctx, bundleJSON, digest, predicateType) })
	}
	if v.lazy != nil {
		inner, err := v.resolve(ctx)
		if err != nil {
			return nil, err
		}
		return inner.VerifyStatement(ctx, bundleJSON, digest, predicateType)
	}
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
	return &Verified{PredicateType: res.Statement.PredicateType, Statement: res.Statement, Signer: signerOf(res)}, nil
}

// signerOf names who signed: the certificate's identity and issuer, or "key".
func signerOf(res *verify.VerificationResult) string {
	if res.Signature != nil && res.Signature.Certificate != nil {
		s := res.Signature.Certificate.SubjectAlternativeName
		if iss := res.Signature.Certificate.Extensions.Issuer; iss != "" {
			s += " (issuer " + iss + ")"
		}
		return s
	}
	if res.VerifiedIdentity == nil {
		return "key"
	}
	return ""
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

// BundleSigner is who signed a bundle, read without verifying it, to tell a consumer what
// to verify against.
type BundleSigner struct {
	Identity, Issuer string // a keyless bundle's certificate identity and OIDC issuer
	Keyed            bool   // signed with a key: no certificate
	TLog             bool   // the bundle carries a transparency-log entry
}

// ReadBundleSigner reads the signer of the bundle at path.
func ReadBundleSigner(path string) (BundleSigner, error) {
	b, err := bundle.LoadJSONFromPath(path)
	if err != nil {
		return BundleSigner{}, err
	}
	vc, err := b.VerificationContent()
	if err != nil {
		return BundleSigner{}, err
	}
	entries, err := b.TlogEntries()
	if err != nil {
		return BundleSigner{}, err
	}
	s := BundleSigner{TLog: len(entries) > 0}
	cert := vc.Certificate()
	if cert == nil {
		s.Keyed = true
		return s, nil
	}
	sum, err := certificate.SummarizeCertificate(cert)
	if err != nil {
		return BundleSigner{}, err
	}
	s.Identity, s.Issuer = sum.SubjectAlternativeName, sum.Extensions.Issuer
	return s, nil
}
