package attest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/relaydev/relay/pkg/oci"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"google.golang.org/protobuf/encoding/protojson"
)

// Classic is cosign's classic signature or attestation layer: the registry's type, so
// what a signer makes is stored and read back without translation.
type Classic = oci.ClassicSignature

// rekorBundle is cosign's dev.sigstore.cosign/bundle annotation.
type rekorBundle struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           []byte `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

// SignClassic signs payload as a classic signature with the key; with a transparency log
// the signature is logged in Rekor v1 and carries its entry, which cosign v2's default
// verify --key requires.
func (s *KeySigner) SignClassic(ctx context.Context, payload []byte) (*Classic, error) {
	if s.logs == nil {
		sig, err := s.SignBlob(ctx, payload)
		if err != nil {
			return nil, err
		}
		return &Classic{Payload: payload, Signature: sig}, nil
	}
	if s.logs.rekor1 == nil {
		return nil, ErrClassicNeedsRekorV1
	}
	b, err := s.logs.bundle(ctx, &sign.PlainData{Data: payload}, keypair{s}, nil, []sign.Transparency{s.logs.rekor1})
	if err != nil {
		return nil, fmt.Errorf("classic signature: %w", err)
	}
	tl := b.GetVerificationMaterial().GetTlogEntries()
	if len(tl) != 1 || tl[0].GetInclusionPromise() == nil {
		return nil, errors.New("classic signature: Rekor v1 returned no signed entry timestamp")
	}
	rb, err := rekorBundleOf(tl[0])
	if err != nil {
		return nil, err
	}
	return &Classic{Payload: payload, Signature: base64.StdEncoding.EncodeToString(b.GetMessageSignature().GetSignature()), Bundle: rb}, nil
}

// ErrClassicNeedsRekorV1 is a keyless classic signature without a Rekor v1 log to write it to.
var ErrClassicNeedsRekorV1 = errors.New("cosign's classic signature format carries a Rekor v1 entry (a signed entry timestamp), and the signing config names no Rekor v1 log: drop signing.classic (cosign v2.6 verifies the bundles with --new-bundle-format, cosign v3 by default) or use a signing config with a Rekor v1 log")

// CanSignClassic says whether the signing config names a Rekor v1 log, which keyless classic
// signatures need.
func (s *KeylessSigner) CanSignClassic() bool { return s.rekor1 != nil }

// SignClassic signs payload with the run's certificate and logs it in Rekor v1, in cosign's
// classic format.
func (s *KeylessSigner) SignClassic(ctx context.Context, payload []byte) (*Classic, error) {
	if s.rekor1 == nil {
		return nil, ErrClassicNeedsRekorV1
	}
	b, err := s.bundle(ctx, &sign.PlainData{Data: payload}, []sign.Transparency{s.rekor1})
	if err != nil {
		return nil, err
	}
	vm := b.GetVerificationMaterial()
	if len(vm.GetTlogEntries()) != 1 || vm.GetTlogEntries()[0].GetInclusionPromise() == nil || vm.GetCertificate() == nil {
		return nil, errors.New("keyless classic signature: Rekor v1 returned no signed entry timestamp")
	}
	rbJSON, err := rekorBundleOf(vm.GetTlogEntries()[0])
	if err != nil {
		return nil, err
	}
	leafDER := vm.GetCertificate().GetRawBytes()
	chain, err := chainPEM(s.o.TrustedRoot, leafDER)
	if err != nil {
		return nil, err
	}
	return &Classic{
		Payload:     payload,
		Signature:   base64.StdEncoding.EncodeToString(b.GetMessageSignature().GetSignature()),
		Certificate: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		Chain:       chain,
		Bundle:      rbJSON,
	}, nil
}

// chainPEM is the Fulcio chain (intermediates, root) in tm that issued the leaf.
func chainPEM(tm root.TrustedMaterial, leafDER []byte) ([]byte, error) {
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, err
	}
	var chain bytes.Buffer
	for _, ca := range tm.FulcioCertificateAuthorities() {
		fca, ok := ca.(*root.FulcioCertificateAuthority)
		if !ok {
			continue
		}
		if _, err := ca.Verify(leaf, leaf.NotBefore); err != nil {
			continue
		}
		for _, c := range append(append([]*x509.Certificate(nil), fca.Intermediates...), fca.Root) {
			pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		break
	}
	return chain.Bytes(), nil
}

// rekorBundleOf turns a Rekor v1 entry of a bundle into cosign's bundle annotation.
func rekorBundleOf(te *protorekor.TransparencyLogEntry) ([]byte, error) {
	if te.GetInclusionPromise() == nil {
		return nil, ErrClassicNeedsRekorV1
	}
	var rb rekorBundle
	rb.SignedEntryTimestamp = te.GetInclusionPromise().GetSignedEntryTimestamp()
	rb.Payload.Body = te.GetCanonicalizedBody()
	rb.Payload.IntegratedTime = te.GetIntegratedTime()
	rb.Payload.LogIndex = te.GetLogIndex()
	rb.Payload.LogID = hex.EncodeToString(te.GetLogId().GetKeyId())
	return json.Marshal(rb)
}

// envelope is a DSSE envelope as cosign's classic .att layers hold it.
type envelope struct {
	PayloadType string `json:"payloadType"`
	Payload     []byte `json:"payload"`
	Signatures  []struct {
		KeyID string `json:"keyid"`
		Sig   []byte `json:"sig"`
	} `json:"signatures"`
}

// ClassicAttestation is the classic .att form of one of the key's attestation bundles.
func (s *KeySigner) ClassicAttestation(bundleJSON []byte) (*Classic, error) {
	return ClassicAttestation(bundleJSON, nil)
}

// ClassicAttestation is the classic .att form of one of the run's attestation bundles; it
// needs the bundle's entry to be in Rekor v1.
func (s *KeylessSigner) ClassicAttestation(bundleJSON []byte) (*Classic, error) {
	return ClassicAttestation(bundleJSON, s.o.TrustedRoot)
}

// ClassicAttestation turns an attestation bundle (a DSSE envelope) into cosign's classic
// .att layer: the same envelope and signature, and for a keyless bundle its certificate,
// chain and Rekor v1 entry; tm supplies the chain. Nothing is signed again.
func ClassicAttestation(bundleJSON []byte, tm root.TrustedMaterial) (*Classic, error) {
	var pb protobundle.Bundle
	if err := protojson.Unmarshal(bundleJSON, &pb); err != nil {
		return nil, fmt.Errorf("parsing bundle: %w", err)
	}
	d := pb.GetDsseEnvelope()
	if d == nil {
		return nil, errors.New("bundle holds no DSSE envelope")
	}
	env := envelope{PayloadType: d.GetPayloadType(), Payload: d.GetPayload()}
	for _, s := range d.GetSignatures() {
		env.Signatures = append(env.Signatures, struct {
			KeyID string `json:"keyid"`
			Sig   []byte `json:"sig"`
		}{s.GetKeyid(), s.GetSig()})
	}
	raw, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	c := &Classic{Payload: raw}
	vm := pb.GetVerificationMaterial()
	leaf := vm.GetCertificate().GetRawBytes()
	if leaf == nil && len(vm.GetX509CertificateChain().GetCertificates()) > 0 {
		leaf = vm.GetX509CertificateChain().GetCertificates()[0].GetRawBytes()
	}
	if leaf == nil {
		// A key signature: the envelope, and its Rekor v1 entry when it was logged in one.
		for _, te := range vm.GetTlogEntries() {
			if te.GetInclusionPromise() != nil {
				if c.Bundle, err = rekorBundleOf(te); err != nil {
					return nil, err
				}
				break
			}
		}
		return c, nil
	}
	if len(vm.GetTlogEntries()) == 0 {
		return nil, ErrClassicNeedsRekorV1
	}
	if c.Bundle, err = rekorBundleOf(vm.GetTlogEntries()[0]); err != nil {
		return nil, err
	}
	c.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf})
	if tm != nil {
		if c.Chain, err = chainPEM(tm, leaf); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// VerifyClassic checks a classic signature of digest against the verifier's trust: the
// key, or for keyless signatures the certificate chain, the identity policy and the Rekor
// v1 entry. The signature is checked as a Sigstore bundle made of its parts. It returns
// who signed.
func (v *Verifier) VerifyClassic(ctx context.Context, c Classic, digest string) (string, error) {
	if v.anyOf != nil {
		return firstOf(v.anyOf, func(x *Verifier) (string, error) { return x.VerifyClassic(ctx, c, digest) })
	}
	if v.lazy != nil {
		inner, err := v.resolve(ctx)
		if err != nil {
			return "", err
		}
		return inner.VerifyClassic(ctx, c, digest)
	}
	if err := checkPayload(c.Payload, digest); err != nil {
		return "", err
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil {
		return "", fmt.Errorf("classic signature is not base64: %w", err)
	}
	sum := sha256.Sum256(c.Payload)
	pb, err := v.classicBundle(c)
	if err != nil {
		return "", err
	}
	pb.Content = &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
		MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
		Signature:     sig,
	}}
	var opts []verify.PolicyOption
	if v.keyed {
		opts = append(opts, verify.WithKey())
	} else if v.identity != nil {
		opts = append(opts, verify.WithCertificateIdentity(*v.identity))
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		return "", fmt.Errorf("classic signature: %w", err)
	}
	res, err := v.v.Verify(b, verify.NewPolicy(verify.WithArtifact(bytes.NewReader(c.Payload)), opts...))
	if err != nil {
		return "", fmt.Errorf("classic signature: %w", err)
	}
	return signerOf(res), nil
}

// VerifyClassicAttestation checks a classic .att layer (a DSSE envelope, Classic.Payload)
// as VerifyStatement checks a bundle: signature, trust, identity, subject digest and
// predicate type.
func (v *Verifier) VerifyClassicAttestation(ctx context.Context, c Classic, digest, predicateType string) (*Verified, error) {
	if v.anyOf != nil {
		return firstOf(v.anyOf, func(x *Verifier) (*Verified, error) { return x.VerifyClassicAttestation(ctx, c, digest, predicateType) })
	}
	if v.lazy != nil {
		inner, err := v.resolve(ctx)
		if err != nil {
			return nil, err
		}
		return inner.VerifyClassicAttestation(ctx, c, digest, predicateType)
	}
	var env envelope
	if err := json.Unmarshal(c.Payload, &env); err != nil {
		return nil, fmt.Errorf("classic attestation is not a DSSE envelope: %w", err)
	}
	pb, err := v.classicBundle(c)
	if err != nil {
		return nil, err
	}
	d := &protodsse.Envelope{Payload: env.Payload, PayloadType: env.PayloadType}
	for _, s := range env.Signatures {
		d.Signatures = append(d.Signatures, &protodsse.Signature{Sig: s.Sig, Keyid: s.KeyID})
	}
	pb.Content = &protobundle.Bundle_DsseEnvelope{DsseEnvelope: d}
	raw, err := protojson.Marshal(pb)
	if err != nil {
		return nil, err
	}
	return v.VerifyStatement(ctx, raw, digest, predicateType)
}

// classicBundle is the verification material of a classic layer as a bundle without its
// content: a key hint, or (keyless) the certificate and the Rekor v1 entry with its promise,
// which only v0.1 bundles may carry without an inclusion proof.
func (v *Verifier) classicBundle(c Classic) (*protobundle.Bundle, error) {
	pb := &protobundle.Bundle{VerificationMaterial: &protobundle.VerificationMaterial{}}
	if v.keyed {
		if len(c.Certificate) > 0 {
			return nil, errors.New("classic signature carries a certificate; a key was expected")
		}
		pb.MediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
		pb.VerificationMaterial.Content = &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{}}
		if len(c.Bundle) > 0 { // a logged key signature: its entry is checked too
			te, err := classicTlogEntry(c.Bundle)
			if err != nil {
				return nil, err
			}
			pb.MediaType = "application/vnd.dev.sigstore.bundle+json;version=0.1"
			pb.VerificationMaterial.TlogEntries = []*protorekor.TransparencyLogEntry{te}
		}
		return pb, nil
	}
	blk, _ := pem.Decode(c.Certificate)
	if blk == nil {
		return nil, errors.New("classic signature carries no certificate; a keyless signature was expected")
	}
	if len(c.Bundle) == 0 {
		return nil, errors.New("classic signature carries no Rekor bundle annotation (a keyless classic signature needs one)")
	}
	te, err := classicTlogEntry(c.Bundle)
	if err != nil {
		return nil, err
	}
	pb.MediaType = "application/vnd.dev.sigstore.bundle+json;version=0.1"
	pb.VerificationMaterial.Content = &protobundle.VerificationMaterial_X509CertificateChain{
		X509CertificateChain: &protocommon.X509CertificateChain{Certificates: []*protocommon.X509Certificate{{RawBytes: blk.Bytes}}}}
	pb.VerificationMaterial.TlogEntries = []*protorekor.TransparencyLogEntry{te}
	return pb, nil
}

// classicTlogEntry is the Rekor v1 entry of cosign's bundle annotation, with its promise
// (only v0.1 bundles may carry an entry without an inclusion proof).
func classicTlogEntry(annotation []byte) (*protorekor.TransparencyLogEntry, error) {
	var rb rekorBundle
	if err := json.Unmarshal(annotation, &rb); err != nil || len(rb.SignedEntryTimestamp) == 0 {
		return nil, errors.New("classic signature's Rekor bundle annotation holds no signed entry timestamp")
	}
	var body struct{ Kind, APIVersion string }
	json.Unmarshal(rb.Payload.Body, &body)
	logID, err := hex.DecodeString(rb.Payload.LogID)
	if err != nil {
		return nil, fmt.Errorf("classic signature's Rekor bundle: log id: %w", err)
	}
	return &protorekor.TransparencyLogEntry{
		LogIndex:          rb.Payload.LogIndex,
		LogId:             &protocommon.LogId{KeyId: logID},
		KindVersion:       &protorekor.KindVersion{Kind: body.Kind, Version: body.APIVersion},
		IntegratedTime:    rb.Payload.IntegratedTime,
		InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
		CanonicalizedBody: rb.Payload.Body,
	}, nil
}

func checkPayload(payload []byte, digest string) error {
	var p simpleSigning
	if err := json.Unmarshal(payload, &p); err != nil {
		return fmt.Errorf("classic signature payload: %w", err)
	}
	if p.Critical.Type != simpleSigningType || p.Critical.Image.DockerManifestDigest != digest {
		return fmt.Errorf("classic signature is for %s, not %s", p.Critical.Image.DockerManifestDigest, digest)
	}
	return nil
}
