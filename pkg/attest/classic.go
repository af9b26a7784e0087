package attest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// cosign's classic "simple signing" payload: what a .sig layer holds and the key signs.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

const simpleSigningType = "cosign container image signature"

// SimpleSigningPayload is the payload cosign signs for repo@digest.
func SimpleSigningPayload(repo, digest string) ([]byte, error) {
	var p simpleSigning
	p.Critical.Identity.DockerReference = repo
	p.Critical.Image.DockerManifestDigest = digest
	p.Critical.Type = simpleSigningType
	return json.Marshal(p)
}

// SignBlob signs payload (ECDSA over its SHA-256, ASN.1) and returns it base64, as cosign's
// classic signatures carry it.
func (s *KeySigner) SignBlob(ctx context.Context, payload []byte) (string, error) {
	sig, err := s.sign(ctx, payload)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// VerifyClassic checks a classic signature with pub and that its payload names digest.
func VerifyClassic(pub crypto.PublicKey, payload []byte, sigB64, digest string) error {
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("classic signatures are checked with ECDSA keys, not %T", pub)
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return fmt.Errorf("classic signature is not base64: %w", err)
	}
	sum := sha256.Sum256(payload)
	if !ecdsa.VerifyASN1(ek, sum[:], sig) {
		return errors.New("classic signature does not verify with the key")
	}
	return checkPayload(payload, digest)
}

// PublicKey is the signer's public key.
func (s *KeySigner) PublicKey() crypto.PublicKey { return s.pub }
