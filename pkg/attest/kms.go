package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"fmt"
	"regexp"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/sigstore/sigstore/pkg/signature/options"

	// The providers register themselves with kms.Get; each authenticates with its
	// platform's own chain (workload identity first), never with a secret in relay's config.
	_ "github.com/sigstore/sigstore/pkg/signature/kms/aws"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/azure"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/gcp"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
)

// kmsProviders are the key URI schemes relay signs with, and where each takes its
// credentials from; the hints name the key spec that gives an ECDSA P-256 key.
var kmsProviders = []struct{ scheme, creds, p256 string }{
	{"awskms://", "the AWS default chain (environment, web identity, container or instance role)", "key spec ECC_NIST_P256"},
	{"gcpkms://", "Google application default credentials (metadata server or GOOGLE_APPLICATION_CREDENTIALS)", "algorithm EC_SIGN_P256_SHA256"},
	{"azurekms://", "Azure DefaultAzureCredential (workload or managed identity, or AZURE_* variables)", "key type EC, curve P-256"},
	{"hashivault://", "VAULT_ADDR and VAULT_TOKEN (Vault's transit engine, path TRANSIT_SECRET_ENGINE_PATH, default transit)", "transit key type ecdsa-p256"},
}

// IsKMSKey says whether a signing.key names a KMS key rather than a file.
func IsKMSKey(ref string) bool { return strings.Contains(ref, "://") }

// LoadKMSKey opens a key held by a KMS (awskms://, gcpkms://, azurekms://, hashivault://)
// through Sigstore's KMS providers, the ones cosign uses, so a key cosign signs with works
// here unchanged. Only the public key and signatures leave the KMS. opts reach the
// provider (tests point it at a fake service).
func LoadKMSKey(ctx context.Context, ref string, opts ...signature.RPCOption) (*KeySigner, error) {
	var creds, p256 string
	for _, p := range kmsProviders {
		if strings.HasPrefix(ref, p.scheme) {
			creds, p256 = p.creds, p.p256
		}
	}
	if creds == "" {
		var schemes []string
		for _, p := range kmsProviders {
			schemes = append(schemes, p.scheme)
		}
		return nil, fmt.Errorf("signing key %s: unknown KMS; relay signs with %s keys, or a cosign key file", ref, strings.Join(schemes, ", "))
	}
	sv, err := kms.Get(ctx, ref, crypto.SHA256, opts...)
	if err != nil {
		return nil, fmt.Errorf("opening KMS key %s: %w (credentials come from %s)", ref, err, creds)
	}
	pub, err := sv.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("reading the public key of KMS key %s: %w%s (credentials come from %s)", ref, err, permissionHint(err, "read the key's public key"), creds)
	}
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("KMS key %s is a %s key; relay signs with ECDSA P-256 keys, cosign's default: create one with %s", ref, keyKind(pub), p256)
	}
	s, err := newKeySigner(ek, func(ctx context.Context, message []byte) ([]byte, error) {
		sig, err := sv.SignMessage(bytes.NewReader(message), options.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("signing with KMS key %s: %w%s", ref, err, permissionHint(err, "sign with the key"))
		}
		return sig, nil
	})
	if err != nil {
		return nil, err
	}
	s.name = ref
	return s, nil
}

// permissionHint names the missing permission when the KMS refused one.
func permissionHint(err error, what string) string {
	if deniedRE.MatchString(err.Error()) {
		return " (the credential needs permission to " + what + ")"
	}
	return ""
}

var deniedRE = regexp.MustCompile(`(?i)denied|not authorized|forbidden|unauthori[sz]ed|\b403\b|does not have .*permission`)

func keyKind(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	default:
		return strings.TrimPrefix(fmt.Sprintf("%T", pub), "*")
	}
}
