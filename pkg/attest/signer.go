// Package attest signs and verifies what relay publishes: in-toto statements wrapped in
// DSSE inside Sigstore bundles, SLSA provenance, and the trust material to check them.
package attest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/relaydev/relay/internal/httpx"
)

// InTotoPayloadType is the DSSE payload type of in-toto statements.
const InTotoPayloadType = "application/vnd.in-toto+json"

// Signer turns an in-toto statement into a Sigstore bundle (JSON).
type Signer interface {
	SignStatement(ctx context.Context, statement []byte) ([]byte, error)
	// Identity names who signs, for logs and the release summary.
	Identity() string
}

// KeySigner signs with an ECDSA P-256 key and no certificate authority or transparency
// log: the bundles verify against trust material made from the same public key
// (sigstore-go's offline signing with nil providers). It is --local's ephemeral signer,
// signing.mode key's file key, and a KMS key (LoadKMSKey), which never leaves the KMS.
type KeySigner struct {
	pub  *ecdsa.PublicKey
	sign func(ctx context.Context, message []byte) ([]byte, error) // ASN.1 ECDSA over SHA-256
	hint string
	name string // the KMS key URI, if the key lives in a KMS
	now  func() time.Time
	logs *services // the transparency logs (and TSAs) signatures go to; nil: none
}

// KeyLogOptions say where a key's signatures are logged.
type KeyLogOptions struct {
	// SigningConfig names the Rekor logs and timestamp authorities (its Fulcio is unused).
	SigningConfig *root.SigningConfig
	// TrustedRoot checks each logged bundle right after it is made.
	TrustedRoot root.TrustedMaterial
	Budget      time.Duration // of each service's host; default 10 min
	Transport   http.RoundTripper
	Retrier     *httpx.Retrier // the retry layer in Transport (see KeylessOptions)
	Logger      *slog.Logger
	Sleep       func(ctx context.Context, d time.Duration) error
	Rand        *mrand.Rand
}

// UseTransparencyLog makes every signature of the key go to the signing config's Rekor
// logs (and be timestamped by its TSAs), as cosign does by default: consumers' plain
// `cosign verify --key` then finds the entry it requires. A key's entries hold the public
// key and the digests, no certificate, repository or workflow name.
func (s *KeySigner) UseTransparencyLog(o KeyLogOptions) error {
	if o.SigningConfig == nil || o.TrustedRoot == nil {
		return errors.New("a transparency log needs a signing config and a trusted root")
	}
	svc, err := newServices(o.SigningConfig, s.now(), retrying(o.SigningConfig, o.Transport, o.Retrier, o.Budget, o.Logger, o.Sleep, o.Rand))
	if err != nil {
		return err
	}
	if len(svc.tlogs) == 0 {
		return errors.New("signing config names no Rekor log valid now: set signing.tlog: false to sign without one")
	}
	keyTM, err := s.TrustedMaterial()
	if err != nil {
		return err
	}
	// Each logged bundle is checked right away: the entry against the log's key, and the
	// entry's public key against this key.
	svc.tr = root.TrustedMaterialCollection{keyTM, o.TrustedRoot}
	s.logs = svc
	return nil
}

// UsesTransparencyLog reports whether signatures are logged.
func (s *KeySigner) UsesTransparencyLog() bool { return s.logs != nil }

// Endpoints are the transparency logs and timestamp authorities signing will call.
func (s *KeySigner) Endpoints() []Endpoint {
	if s.logs == nil {
		return nil
	}
	return s.logs.urls
}

// CanSignClassic says whether classic signatures can carry what cosign v2 checks: with a
// log, a Rekor v1 entry (signed entry timestamp); without one, nothing is needed.
func (s *KeySigner) CanSignClassic() bool { return s.logs == nil || s.logs.rekor1 != nil }

// LoadOrCreateKey reads an unencrypted PKCS#8 EC key from path, or creates one (0600).
// The key belongs to the local sandbox: it survives a resumed run so a re-run can
// recognise its own signatures instead of adding new ones.
func LoadOrCreateKey(path string) (*KeySigner, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("saving ephemeral signing key: %w", err)
		}
		return NewKeySigner(k)
	}
	if err != nil {
		return nil, fmt.Errorf("reading signing key %s: %w", path, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("signing key %s is not PEM: delete it to make a new ephemeral key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing signing key %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key %s is not an ECDSA P-256 key", path)
	}
	return NewKeySigner(ek)
}

// LoadCosignKey reads a private key as `cosign generate-key-pair` writes it (PEM
// "ENCRYPTED SIGSTORE PRIVATE KEY" or the older "ENCRYPTED COSIGN PRIVATE KEY": scrypt and
// secretbox over PKCS#8), decrypting it with password (COSIGN_PASSWORD); an unencrypted
// PKCS#8 PEM key is accepted too. Only ECDSA P-256 keys, cosign's default, are supported.
func LoadCosignKey(path string, password []byte) (*KeySigner, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("signing key %s is not PEM: expected a cosign key (cosign generate-key-pair)", path)
	}
	der := blk.Bytes
	switch blk.Type {
	case "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY":
		if der, err = encrypted.Decrypt(blk.Bytes, password); err != nil {
			return nil, fmt.Errorf("decrypting signing key %s: %w (is COSIGN_PASSWORD the key's password?)", path, err)
		}
	case "PRIVATE KEY":
	default:
		return nil, fmt.Errorf("signing key %s is a %q PEM block, not a cosign private key", path, blk.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parsing signing key %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key %s is a %T; relay signs with ECDSA P-256 keys (cosign's default)", path, k)
	}
	return NewKeySigner(ek)
}

// NewKeySigner wraps an ECDSA P-256 private key.
func NewKeySigner(k *ecdsa.PrivateKey) (*KeySigner, error) {
	return newKeySigner(&k.PublicKey, func(_ context.Context, message []byte) ([]byte, error) {
		sum := sha256.Sum256(message)
		return ecdsa.SignASN1(rand.Reader, k, sum[:])
	})
}

func newKeySigner(pub *ecdsa.PublicKey, sign func(context.Context, []byte) ([]byte, error)) (*KeySigner, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return &KeySigner{pub: pub, sign: sign, hint: base64.StdEncoding.EncodeToString(sum[:]), now: time.Now}, nil
}

// Identity implements Signer.
func (s *KeySigner) Identity() string {
	if s.name != "" {
		return "key " + s.name + " (" + s.hint + ")"
	}
	return "key " + s.hint
}

// Hint is the key id written into bundles (base64 sha256 of the public key).
func (s *KeySigner) Hint() string { return s.hint }

// PublicKeyPEM is the verification key, published with the release.
func (s *KeySigner) PublicKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(s.pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// TrustedMaterial trusts exactly this key.
func (s *KeySigner) TrustedMaterial() (root.TrustedMaterial, error) {
	return TrustedKey(s.pub, s.hint)
}

// TrustedKey makes trust material from one public key, valid at any time.
func TrustedKey(pub crypto.PublicKey, hint string) (root.TrustedMaterial, error) {
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	key := root.NewExpiringKey(v, time.Time{}, time.Time{})
	return root.NewTrustedPublicKeyMaterial(func(id string) (root.TimeConstrainedVerifier, error) {
		if id != "" && id != hint {
			return nil, fmt.Errorf("bundle was signed by key %q, not the trusted key %q", id, hint)
		}
		return key, nil
	}), nil
}

// LoadPublicKey reads a PEM public key and its hint.
func LoadPublicKey(path string) (crypto.PublicKey, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, "", fmt.Errorf("public key %s is not PEM", path)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("parsing public key %s: %w", path, err)
	}
	sum := sha256.Sum256(blk.Bytes)
	return pub, base64.StdEncoding.EncodeToString(sum[:]), nil
}

// SignStatement implements Signer.
func (s *KeySigner) SignStatement(ctx context.Context, statement []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	content := &sign.DSSEData{Data: statement, PayloadType: InTotoPayloadType}
	var b *protobundle.Bundle
	var err error
	if s.logs != nil {
		b, err = s.logs.bundle(ctx, content, keypair{s}, nil, s.logs.tlogs)
	} else {
		b, err = sign.Bundle(content, keypair{s}, sign.BundleOptions{Context: ctx})
	}
	if err != nil {
		return nil, fmt.Errorf("signing statement: %w", err)
	}
	return protojson.Marshal(b)
}

// keypair adapts KeySigner to sigstore-go's sign.Keypair.
type keypair struct{ s *KeySigner }

func (k keypair) GetHashAlgorithm() protocommon.HashAlgorithm {
	return protocommon.HashAlgorithm_SHA2_256
}
func (k keypair) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256
}
func (k keypair) GetHint() []byte                { return []byte(k.s.hint) }
func (k keypair) GetKeyAlgorithm() string        { return "ECDSA" }
func (k keypair) GetPublicKey() crypto.PublicKey { return k.s.pub }
func (k keypair) GetPublicKeyPem() (string, error) {
	b, err := k.s.PublicKeyPEM()
	return string(b), err
}
func (k keypair) SignData(ctx context.Context, data []byte) ([]byte, []byte, error) {
	sum := sha256.Sum256(data)
	sig, err := k.s.sign(ctx, data)
	return sig, sum[:], err
}
