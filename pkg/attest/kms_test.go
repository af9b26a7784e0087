package attest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms/gcp"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/relaydev/relay/internal/testutil"
)

// kmsFake is one KMS provider's fake with the key URI and options that reach it.
type kmsFake struct {
	name            string
	missing, denied string // what the provider says of a missing key and a refused sign
	start           func(t *testing.T, keys map[string]testutil.KMSKey) (uri func(key string) string, calls interface{ Calls(string) int }, deny *bool, opts []signature.RPCOption)
}

var kmsFakes = []kmsFake{
	{"awskms", "is not found", "not authorized to perform: kms:Sign", func(t *testing.T, keys map[string]testutil.KMSKey) (func(string) string, interface{ Calls(string) int }, *bool, []signature.RPCOption) {
		f := testutil.StartAWSKMS(t, keys)
		// The SDK's default chain, isolated from this machine: static credentials, and the
		// standard per-service endpoint variable (awskms:///alias/x has no endpoint of its own).
		for k, v := range map[string]string{
			"AWS_ACCESS_KEY_ID": testutil.FakeAWSCredentials.AccessKeyID, "AWS_SECRET_ACCESS_KEY": testutil.FakeAWSCredentials.SecretAccessKey,
			"AWS_SESSION_TOKEN": "", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_KMS": f.URL, "AWS_ENDPOINT_URL": "", "AWS_PROFILE": "",
			"AWS_CONFIG_FILE": t.TempDir() + "/none", "AWS_SHARED_CREDENTIALS_FILE": t.TempDir() + "/none", "AWS_EC2_METADATA_DISABLED": "true",
		} {
			t.Setenv(k, v)
		}
		return func(k string) string { return "awskms:///alias/" + k }, f, &f.DenySign, nil
	}},
	{"hashivault", "could not read data from transit key path", "permission denied", func(t *testing.T, keys map[string]testutil.KMSKey) (func(string) string, interface{ Calls(string) int }, *bool, []signature.RPCOption) {
		f := testutil.StartVault(t, keys)
		t.Setenv("VAULT_ADDR", f.URL)
		t.Setenv("VAULT_TOKEN", f.Token)
		return func(k string) string { return "hashivault://" + k }, f, &f.DenySign, nil
	}},
	{"gcpkms", "NotFound", "cloudkms.cryptoKeyVersions.useToSign", func(t *testing.T, keys map[string]testutil.KMSKey) (func(string) string, interface{ Calls(string) int }, *bool, []signature.RPCOption) {
		full := map[string]testutil.KMSKey{}
		for n, k := range keys {
			full["projects/acme/locations/global/keyRings/release/cryptoKeys/"+n] = k
		}
		f := testutil.StartGCPKMS(t, full)
		opts := []signature.RPCOption{
			gcp.WithGoogleAPIClientOption(option.WithEndpoint(f.Addr)),
			gcp.WithGoogleAPIClientOption(option.WithoutAuthentication()),
			gcp.WithGoogleAPIClientOption(option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))),
		}
		return func(k string) string {
			return "gcpkms://projects/acme/locations/global/keyRings/release/cryptoKeys/" + k
		}, f, &f.DenySign, opts
	}},
}

// A KMS key signs bundles and classic signatures that verify with the key the KMS holds
// (not merely the one relay read back); an RSA key and a credential that may not sign
// fail with errors that say what to do.
func TestKMSKeys(t *testing.T) {
	ctx := context.Background()
	for _, fk := range kmsFakes {
		t.Run(fk.name, func(t *testing.T) {
			good, rsaKey := testutil.NewKMSKey(t, false), testutil.NewKMSKey(t, true)
			uri, calls, deny, opts := fk.start(t, map[string]testutil.KMSKey{"release": good, "legacy-rsa": rsaKey})

			s, err := LoadKMSKey(ctx, uri("release"), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(s.Identity(), uri("release")) {
				t.Errorf("identity %q does not name the key", s.Identity())
			}
			der, _ := x509.MarshalPKIXPublicKey(good.Signer.Public())
			sum := sha256.Sum256(der)
			tm, err := TrustedKey(good.Signer.Public(), base64.StdEncoding.EncodeToString(sum[:]))
			if err != nil {
				t.Fatal(err)
			}
			v, err := NewKeyVerifier(tm)
			if err != nil {
				t.Fatal(err)
			}
			b := signed(t, s, []Subject{{Name: "r/x", Digest: digestA}}, PredicateSign, nil)
			if _, err := v.VerifyStatement(ctx, b, digestA, PredicateSign); err != nil {
				t.Fatalf("bundle signed by the KMS key does not verify: %v", err)
			}
			payload, _ := SimpleSigningPayload("r/x", digestA)
			sig, err := s.SignBlob(ctx, payload)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyClassic(good.Signer.Public(), payload, sig, digestA); err != nil {
				t.Fatalf("classic signature by the KMS key does not verify: %v", err)
			}
			if n := calls.Calls("sign"); n != 2 {
				t.Errorf("%d sign calls to the KMS, want 2", n)
			}

			if _, err := LoadKMSKey(ctx, uri("legacy-rsa"), opts...); err == nil || !strings.Contains(err.Error(), "ECDSA P-256") || !strings.Contains(err.Error(), "create one with") {
				t.Errorf("RSA key: %v", err)
			}
			if _, err := LoadKMSKey(ctx, uri("missing"), opts...); err == nil || !strings.Contains(err.Error(), uri("missing")) || !strings.Contains(err.Error(), fk.missing) {
				t.Errorf("missing key: %v", err)
			}
			*deny = true
			if _, err := s.SignStatement(ctx, []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "permission to sign") || !strings.Contains(err.Error(), fk.denied) {
				t.Errorf("refused sign: %v", err)
			}
		})
	}
}

func TestKMSUnknownScheme(t *testing.T) {
	_, err := LoadKMSKey(context.Background(), "pkcs11://slot/1")
	if err == nil || !strings.Contains(err.Error(), "awskms://") || !strings.Contains(err.Error(), "cosign key file") {
		t.Fatalf("unknown scheme: %v", err)
	}
}
