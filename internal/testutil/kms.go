package testutil

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"hash/crc32"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// KMSKey is one key held by a fake KMS: an ECDSA P-256 key (what relay signs with) or an
// RSA key (to check that relay refuses it clearly).
type KMSKey struct {
	Signer crypto.Signer
}

// NewKMSKey makes an ECDSA P-256 key, or an RSA 2048 key when rsaKey is set.
func NewKMSKey(t testing.TB, rsaKey bool) KMSKey {
	t.Helper()
	var k crypto.Signer
	var err error
	if rsaKey {
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return KMSKey{Signer: k}
}

// PublicPEM is the key's public half as PEM.
func (k KMSKey) PublicPEM() string {
	der, _ := x509.MarshalPKIXPublicKey(k.Signer.Public())
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func (k KMSKey) signDigest(digest []byte) ([]byte, error) {
	return k.Signer.Sign(rand.Reader, digest, crypto.SHA256)
}

// kmsCalls counts what a fake KMS was asked, and can refuse signing (a credential
// without the sign permission).
type kmsCalls struct {
	mu       sync.Mutex
	calls    map[string]int
	DenySign bool
}

func (c *kmsCalls) count(op string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[op]++
	return op == "sign" && c.DenySign
}

// Calls is how often op (publickey, sign) was called.
func (c *kmsCalls) Calls(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op]
}

// Fake AWS credentials the AWS KMS fake accepts (and checks SigV4 signatures with).
var FakeAWSCredentials = aws.Credentials{AccessKeyID: "AKIAFAKEKMS", SecretAccessKey: "fake-kms-secret"}

// AWSKMS is AWS KMS's JSON 1.1 API (TrentService: DescribeKey, GetPublicKey, Sign) for
// keys named by alias, accepting only requests signed (SigV4) with FakeAWSCredentials.
type AWSKMS struct {
	kmsCalls
	URL  string
	keys map[string]KMSKey // "alias/NAME" -> key
}

// StartAWSKMS serves keys by alias name (without the "alias/" prefix).
func StartAWSKMS(t testing.TB, keys map[string]KMSKey) *AWSKMS {
	t.Helper()
	f := &AWSKMS{keys: map[string]KMSKey{}}
	for n, k := range keys {
		f.keys["alias/"+n] = k
	}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *AWSKMS) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	fail := func(code int, typ, msg string) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
	}
	if _, err := CheckSigV4(r, body, "kms", FakeAWSCredentials); err != nil {
		fail(http.StatusBadRequest, "InvalidSignatureException", err.Error())
		return
	}
	var in struct {
		KeyID       string `json:"KeyId"`
		Message     []byte
		MessageType string
	}
	json.Unmarshal(body, &in)
	k, ok := f.keys[in.KeyID]
	if !ok {
		fail(http.StatusBadRequest, "NotFoundException", "Alias arn:aws:kms:us-east-1:111122223333:"+in.KeyID+" is not found.")
		return
	}
	arn := "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	spec, alg := "ECC_NIST_P256", "ECDSA_SHA_256"
	if _, isRSA := k.Signer.Public().(*rsa.PublicKey); isRSA {
		spec, alg = "RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"
	}
	switch target := r.Header.Get("X-Amz-Target"); target {
	case "TrentService.DescribeKey":
		json.NewEncoder(w).Encode(map[string]any{"KeyMetadata": map[string]any{
			"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "Arn": arn, "KeyState": "Enabled", "Enabled": true,
			"KeyUsage": "SIGN_VERIFY", "KeySpec": spec, "CustomerMasterKeySpec": spec, "SigningAlgorithms": []string{alg},
		}})
	case "TrentService.GetPublicKey":
		f.count("publickey")
		der, _ := x509.MarshalPKIXPublicKey(k.Signer.Public())
		json.NewEncoder(w).Encode(map[string]any{"KeyId": arn, "PublicKey": der, "KeySpec": spec, "CustomerMasterKeySpec": spec,
			"KeyUsage": "SIGN_VERIFY", "SigningAlgorithms": []string{alg}})
	case "TrentService.Sign":
		if f.count("sign") {
			fail(http.StatusBadRequest, "AccessDeniedException", "User: arn:aws:sts::111122223333:assumed-role/runner is not authorized to perform: kms:Sign on resource: "+arn)
			return
		}
		if in.MessageType != "DIGEST" || len(in.Message) != sha256.Size {
			fail(http.StatusBadRequest, "ValidationException", "expected a SHA-256 DIGEST")
			return
		}
		sig, err := k.signDigest(in.Message)
		if err != nil {
			fail(http.StatusInternalServerError, "KMSInternalException", err.Error())
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"KeyId": arn, "Signature": sig, "SigningAlgorithm": alg})
	default:
		fail(http.StatusBadRequest, "UnknownOperationException", target)
	}
}

// CheckSigV4 re-signs the request with creds over exactly the headers the client signed
// and returns the region of its credential scope, or an error if the signatures differ.
func CheckSigV4(r *http.Request, body []byte, service string, creds aws.Credentials) (string, error) {
	auth := r.Header.Get("Authorization")
	scope := strings.Split(strings.TrimPrefix(strings.Split(auth, ",")[0], "AWS4-HMAC-SHA256 Credential="), "/")
	if len(scope) != 5 || scope[0] != creds.AccessKeyID || scope[3] != service {
		return "", fmt.Errorf("bad credential scope %q", auth)
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "", fmt.Errorf("no X-Amz-Date")
	}
	check := r.Clone(context.Background())
	signed := map[string]bool{}
	for _, part := range strings.Split(auth, ", ") {
		if v, ok := strings.CutPrefix(part, "SignedHeaders="); ok {
			for _, h := range strings.Split(v, ";") {
				signed[http.CanonicalHeaderKey(h)] = true
			}
		}
	}
	for h := range check.Header {
		if !signed[h] {
			check.Header.Del(h)
		}
	}
	check.Body = io.NopCloser(bytes.NewReader(body))
	sum := sha256.Sum256(body)
	// The server sees the request without its scheme and host; restore what was signed.
	check.URL.Scheme, check.URL.Host = "http", r.Host
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, check, hex.EncodeToString(sum[:]), service, scope[2], when); err != nil {
		return "", err
	}
	if check.Header.Get("Authorization") != auth {
		return "", fmt.Errorf("signature mismatch")
	}
	return scope[2], nil
}

// Vault is HashiCorp Vault's transit engine (read key, sign) at /v1/transit, accepting
// only Token.
type Vault struct {
	kmsCalls
	URL   string
	Token string
	keys  map[string]KMSKey
}

// StartVault serves keys by transit key name.
func StartVault(t testing.TB, keys map[string]KMSKey) *Vault {
	t.Helper()
	f := &Vault{Token: "hvs.fake-vault-token", keys: keys}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *Vault) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fail := func(code int, msg string) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string][]string{"errors": {msg}})
	}
	if r.Header.Get("X-Vault-Token") != f.Token {
		fail(http.StatusForbidden, "permission denied")
		return
	}
	reply := func(data map[string]any) {
		json.NewEncoder(w).Encode(map[string]any{"request_id": "0f3c1c8e-5b1a-4f0e-9c1d-2b7c3e0d9a11", "lease_id": "", "renewable": false, "lease_duration": 0, "data": data})
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/transit/"), "/")
	switch {
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "keys":
		k, ok := f.keys[parts[1]]
		if !ok {
			fail(http.StatusNotFound, "")
			return
		}
		f.count("publickey")
		typ := "ecdsa-p256"
		if _, isRSA := k.Signer.Public().(*rsa.PublicKey); isRSA {
			typ = "rsa-2048"
		}
		reply(map[string]any{"name": parts[1], "type": typ, "latest_version": 1, "min_available_version": 0, "supports_signing": true,
			"keys": map[string]any{"1": map[string]any{"name": "P-256", "public_key": k.PublicPEM(), "creation_time": "2026-01-01T00:00:00Z"}}})
	case (r.Method == http.MethodPost || r.Method == http.MethodPut) && len(parts) == 3 && parts[0] == "sign":
		k, ok := f.keys[parts[1]]
		if !ok {
			fail(http.StatusBadRequest, "signing key not found")
			return
		}
		if f.count("sign") {
			fail(http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
			return
		}
		var in struct {
			Input     string `json:"input"`
			Prehashed bool   `json:"prehashed"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		digest, err := base64.StdEncoding.DecodeString(in.Input)
		if err != nil || !in.Prehashed || parts[2] != "sha2-256" || len(digest) != sha256.Size {
			fail(http.StatusBadRequest, "expected a prehashed sha2-256 input")
			return
		}
		sig, err := k.signDigest(digest)
		if err != nil {
			fail(http.StatusInternalServerError, err.Error())
			return
		}
		reply(map[string]any{"signature": "vault:v1:" + base64.StdEncoding.EncodeToString(sig), "key_version": 1})
	default:
		fail(http.StatusNotFound, "unsupported path "+r.URL.Path)
	}
}

// GCPKMS is Cloud KMS's gRPC KeyManagementService (GetCryptoKey, ListCryptoKeyVersions,
// GetPublicKey, AsymmetricSign, with the CRC32C integrity fields) on 127.0.0.1.
type GCPKMS struct {
	kmspb.UnimplementedKeyManagementServiceServer
	kmsCalls
	Addr string
	keys map[string]KMSKey // projects/P/locations/L/keyRings/R/cryptoKeys/K -> key
}

// StartGCPKMS serves keys by full crypto key name.
func StartGCPKMS(t testing.TB, keys map[string]KMSKey) *GCPKMS {
	t.Helper()
	f := &GCPKMS{keys: keys}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	kmspb.RegisterKeyManagementServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	f.Addr = lis.Addr().String()
	return f
}

func (f *GCPKMS) key(name string) (KMSKey, string, error) {
	base, _, _ := strings.Cut(name, "/cryptoKeyVersions/")
	k, ok := f.keys[base]
	if !ok {
		return KMSKey{}, "", status.Errorf(codes.NotFound, "CryptoKey %s not found.", base)
	}
	return k, base, nil
}

func algorithm(k KMSKey) kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm {
	if _, isRSA := k.Signer.Public().(*rsa.PublicKey); isRSA {
		return kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_2048_SHA256
	}
	return kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256
}

func (f *GCPKMS) GetCryptoKey(_ context.Context, r *kmspb.GetCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	if _, _, err := f.key(r.Name); err != nil {
		return nil, err
	}
	return &kmspb.CryptoKey{Name: r.Name, Purpose: kmspb.CryptoKey_ASYMMETRIC_SIGN}, nil
}

func (f *GCPKMS) ListCryptoKeyVersions(_ context.Context, r *kmspb.ListCryptoKeyVersionsRequest) (*kmspb.ListCryptoKeyVersionsResponse, error) {
	k, base, err := f.key(r.Parent)
	if err != nil {
		return nil, err
	}
	return &kmspb.ListCryptoKeyVersionsResponse{TotalSize: 1, CryptoKeyVersions: []*kmspb.CryptoKeyVersion{{
		Name: base + "/cryptoKeyVersions/1", State: kmspb.CryptoKeyVersion_ENABLED, Algorithm: algorithm(k),
	}}}, nil
}

func (f *GCPKMS) GetPublicKey(_ context.Context, r *kmspb.GetPublicKeyRequest) (*kmspb.PublicKey, error) {
	k, _, err := f.key(r.Name)
	if err != nil {
		return nil, err
	}
	f.count("publickey")
	p := k.PublicPEM()
	return &kmspb.PublicKey{Name: r.Name, Pem: p, Algorithm: algorithm(k), PemCrc32C: wrapperspb.Int64(crc32c([]byte(p)))}, nil
}

func (f *GCPKMS) AsymmetricSign(_ context.Context, r *kmspb.AsymmetricSignRequest) (*kmspb.AsymmetricSignResponse, error) {
	k, _, err := f.key(r.Name)
	if err != nil {
		return nil, err
	}
	if f.count("sign") {
		return nil, status.Errorf(codes.PermissionDenied, "Permission 'cloudkms.cryptoKeyVersions.useToSign' denied on resource '%s' (or it may not exist).", r.Name)
	}
	d := r.GetDigest().GetSha256()
	if len(d) != sha256.Size {
		return nil, status.Error(codes.InvalidArgument, "expected a SHA-256 digest")
	}
	verified := false
	if r.DigestCrc32C != nil {
		if r.DigestCrc32C.Value != crc32c(d) {
			return nil, status.Error(codes.InvalidArgument, "digest_crc32c does not match the digest")
		}
		verified = true
	}
	sig, err := k.signDigest(d)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &kmspb.AsymmetricSignResponse{Name: r.Name, Signature: sig, SignatureCrc32C: wrapperspb.Int64(crc32c(sig)), VerifiedDigestCrc32C: verified}, nil
}

func crc32c(b []byte) int64 { return int64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))) }

// AzureKeyVault is Azure Key Vault's keys API (get key, sign) over TLS with its challenge
// authentication, and the App Service / Container Apps managed identity endpoint
// (IDENTITY_ENDPOINT, IDENTITY_HEADER) that hands out the bearer token it accepts. Clients
// trust its certificate through SSL_CERT_FILE=CertFile, so it suits a relay subprocess.
type AzureKeyVault struct {
	kmsCalls
	Host     string // 127.0.0.1:PORT, the vault host of azurekms://HOST/KEY
	CertFile string
	// Env is what the client's environment needs: SSL_CERT_FILE and the identity endpoint.
	Env  []string
	keys map[string]KMSKey
}

const azureToken = "fake-azure-access-token"

// StartAzureKeyVault serves keys by name.
func StartAzureKeyVault(t testing.TB, keys map[string]KMSKey) *AzureKeyVault {
	t.Helper()
	f := &AzureKeyVault{keys: keys}
	identity := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-IDENTITY-HEADER") != "fake-identity-header" || r.URL.Query().Get("resource") == "" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"access_token": azureToken, "token_type": "Bearer",
			"expires_on": fmt.Sprint(time.Now().Add(time.Hour).Unix()), "resource": r.URL.Query().Get("resource")})
	}))
	t.Cleanup(identity.Close)
	vault := httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(vault.Close)
	f.Host = strings.TrimPrefix(vault.URL, "https://")
	f.CertFile = t.TempDir() + "/vault.pem"
	if err := writeFile(f.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vault.Certificate().Raw})); err != nil {
		t.Fatal(err)
	}
	f.Env = []string{"SSL_CERT_FILE=" + f.CertFile, "IDENTITY_ENDPOINT=" + identity.URL, "IDENTITY_HEADER=fake-identity-header"}
	return f
}

func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }

func (f *AzureKeyVault) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	fail := func(code int, typ, msg string) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": typ, "message": msg}})
	}
	if r.Header.Get("Authorization") != "Bearer "+azureToken {
		// The challenge names the resource to ask a token for; Key Vault clients check that
		// the vault's host ends with ".HOST" of it (here: 127.0.0.1:P ends with .0.1:P).
		_, port, _ := net.SplitHostPort(f.Host)
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://0.1:`+port+`"`)
		fail(http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // keys/NAME[/VERSION[/sign]]
	if len(parts) < 2 || parts[0] != "keys" {
		fail(http.StatusNotFound, "NotFound", "unsupported path "+r.URL.Path)
		return
	}
	k, ok := f.keys[parts[1]]
	if !ok {
		fail(http.StatusNotFound, "KeyNotFound", "A key with (name/id) "+parts[1]+" was not found in this key vault.")
		return
	}
	kid := "https://" + f.Host + "/keys/" + parts[1] + "/0a1b2c3d4e5f60718293a4b5c6d7e8f9"
	b64 := base64.RawURLEncoding.EncodeToString
	switch {
	case r.Method == http.MethodGet && len(parts) <= 3 && parts[len(parts)-1] != "sign":
		f.count("publickey")
		jwk := map[string]any{"kid": kid, "key_ops": []string{"sign", "verify"}}
		switch pub := k.Signer.Public().(type) {
		case *ecdsa.PublicKey:
			var x, y [32]byte
			pub.X.FillBytes(x[:])
			pub.Y.FillBytes(y[:])
			jwk["kty"], jwk["crv"], jwk["x"], jwk["y"] = "EC", "P-256", b64(x[:]), b64(y[:])
		case *rsa.PublicKey:
			jwk["kty"], jwk["n"], jwk["e"] = "RSA", b64(pub.N.Bytes()), b64([]byte{1, 0, 1})
		}
		json.NewEncoder(w).Encode(map[string]any{"key": jwk, "attributes": map[string]any{"enabled": true, "recoveryLevel": "Recoverable+Purgeable"}})
	case r.Method == http.MethodPost && (len(parts) == 3 || len(parts) == 4) && parts[len(parts)-1] == "sign": // keys/NAME[/VERSION]/sign
		if f.count("sign") {
			fail(http.StatusForbidden, "Forbidden", "The user, group or application 'appid=...' does not have keys sign permission on key vault 'relay'.")
			return
		}
		var in struct{ Alg, Value string }
		json.NewDecoder(r.Body).Decode(&in)
		digest, err := base64.RawURLEncoding.DecodeString(in.Value)
		if err != nil || in.Alg != "ES256" || len(digest) != sha256.Size {
			fail(http.StatusBadRequest, "BadParameter", "expected ES256 over a SHA-256 digest")
			return
		}
		der, err := k.signDigest(digest)
		if err != nil {
			fail(http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		// Key Vault returns ECDSA signatures as r||s (JWS), not ASN.1.
		var sig struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &sig); err != nil {
			fail(http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		raw := make([]byte, 64)
		sig.R.FillBytes(raw[:32])
		sig.S.FillBytes(raw[32:])
		json.NewEncoder(w).Encode(map[string]string{"kid": kid, "value": b64(raw)})
	default:
		fail(http.StatusMethodNotAllowed, "BadParameter", r.Method+" "+r.URL.Path)
	}
}
