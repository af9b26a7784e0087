package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/encrypted"
)

var update = flag.Bool("update", false, "rewrite golden files")

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

// seededKey makes a deterministic key so failures reproduce.
func seededKey(t *testing.T, seed int64) *KeySigner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.New(rand.NewSource(seed)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewKeySigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func signed(t *testing.T, s *KeySigner, subjects []Subject, pt string, pred []byte) []byte {
	t.Helper()
	st, err := Statement(subjects, pt, pred)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.SignStatement(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignVerify(t *testing.T) {
	ctx := context.Background()
	s := seededKey(t, 1)
	other := seededKey(t, 2)
	tm, err := s.TrustedMaterial()
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewKeyVerifier(tm)
	if err != nil {
		t.Fatal(err)
	}
	subj := []Subject{{Name: "r/x", Digest: digestA}}
	good := signed(t, s, subj, PredicateSPDX, []byte(`{"spdxVersion":"SPDX-2.3"}`))

	got, err := v.VerifyStatement(ctx, good, digestA, PredicateSPDX)
	if err != nil {
		t.Fatalf("valid bundle rejected: %v", err)
	}
	if got.PredicateType != PredicateSPDX || got.Statement.Subject[0].Name != "r/x" {
		t.Fatalf("verified = %+v", got)
	}
	pt, pred, err := Predicate(good)
	if err != nil || pt != PredicateSPDX || string(pred) != `{"spdxVersion":"SPDX-2.3"}` {
		t.Fatalf("Predicate = %q %s %v", pt, pred, err)
	}

	tampered := tamper(t, good)
	tests := []struct {
		name, digest, pt string
		bundle           []byte
		want             string
	}{
		{"other digest", digestB, PredicateSPDX, good, "verifying bundle"},
		{"other predicate", digestA, PredicateSLSA, good, "another predicate type"},
		{"other key", digestA, PredicateSPDX, signed(t, other, subj, PredicateSPDX, nil), "verifying bundle"},
		{"tampered payload", digestA, PredicateSPDX, tampered, "verifying bundle"},
		{"not a bundle", digestA, "", []byte(`{"x":1}`), "parsing bundle"},
		{"bad digest", "nope", "", good, "not ALGO:HEX"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.VerifyStatement(ctx, tt.bundle, tt.digest, tt.pt)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// tamper rewrites the predicate inside the DSSE payload, keeping subject and signature.
func tamper(t *testing.T, bundle []byte) []byte {
	var b map[string]any
	if err := json.Unmarshal(bundle, &b); err != nil {
		t.Fatal(err)
	}
	env := b["dsseEnvelope"].(map[string]any)
	payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
	payload = []byte(strings.ReplaceAll(string(payload), "SPDX-2.3", "SPDX-9.9"))
	env["payload"] = base64.StdEncoding.EncodeToString(payload)
	out, _ := json.Marshal(b)
	return out
}

func TestLoadOrCreateKeyPersists(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k", "key.pem")
	a, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if a.Hint() != b.Hint() {
		t.Fatal("reloaded key differs")
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode())
	}
	os.WriteFile(p, []byte("junk"), 0o600)
	if _, err := LoadOrCreateKey(p); err == nil || !strings.Contains(err.Error(), "not PEM") {
		t.Fatalf("junk key: %v", err)
	}
	pub, _ := a.PublicKeyPEM()
	pp := filepath.Join(t.TempDir(), "pub.pem")
	os.WriteFile(pp, pub, 0o644)
	_, hint, err := LoadPublicKey(pp)
	if err != nil || hint != a.Hint() {
		t.Fatalf("LoadPublicKey hint %q err %v", hint, err)
	}
}

func TestStatementErrors(t *testing.T) {
	if _, err := Statement(nil, PredicateSign, nil); err == nil {
		t.Error("no subjects accepted")
	}
	if _, err := Statement([]Subject{{Name: "x", Digest: "abc"}}, PredicateSign, nil); err == nil {
		t.Error("digest without algorithm accepted")
	}
	if _, err := Statement([]Subject{{Name: "x", Digest: digestA}}, PredicateSign, []byte("[1]")); err == nil {
		t.Error("non-object predicate accepted")
	}
}

func TestProvenanceGolden(t *testing.T) {
	in := ProvenanceInput{
		Subjects:      []Subject{{Name: "ghcr.io/acme/shop", Digest: digestA}, {Name: "ghcr.io/acme/shop", Digest: digestB}},
		Repository:    "https://github.com/acme/shop.git",
		Ref:           "v1.2.3",
		Commit:        "0123456789abcdef0123456789abcdef01234567",
		Workflow:      "acme/shop/.github/workflows/release.yml@refs/tags/v1.2.3",
		ConfigDigest:  "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
		Builder:       "local",
		BuilderRunIDs: map[string]string{"shop": "local-1"},
		BaseImages:    []string{digestB},
		Bases: []BaseRef{{Name: "ghcr.io/actions/actions-runner:2.330.0", Digest: digestB, Platform: "linux/arm64"},
			{Name: "ghcr.io/actions/actions-runner:2.330.0", Digest: digestA, Platform: "linux/amd64"}},
		BuilderID:    DefaultBuilderIDURI + "/runner-7",
		InvocationID: "42-1-release",
		StartedOn:    time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC),
		FinishedOn:   time.Date(2026, 11, 1, 10, 2, 3, 0, time.UTC),
		BuildLogs:    map[string]string{"shop": "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"},
		RelayVersion: "v0.0.0-test",
	}
	got, err := Provenance(in)
	if err != nil {
		t.Fatal(err)
	}
	var pretty map[string]any
	if err := json.Unmarshal(got, &pretty); err != nil {
		t.Fatal(err)
	}
	out, _ := json.MarshalIndent(pretty, "", "  ")
	golden(t, "provenance.golden.json", append(out, '\n'))
	// Same input, same bytes: re-runs and caches depend on it.
	again, _ := Provenance(in)
	if string(again) != string(got) {
		t.Fatal("provenance is not deterministic")
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != string(got) {
		t.Fatalf("%s differs from the output; run go test -update after checking:\n%s", p, got)
	}
}

func TestLoadCosignKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	enc, err := encrypted.Encrypt(der, []byte("s3cret")) // what cosign generate-key-pair does
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, _ := rsa.GenerateKey(cryptorand.Reader, 2048)
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	files := map[string][]byte{
		"cosign.key":  pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED SIGSTORE PRIVATE KEY", Bytes: enc}),
		"old.key":     pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED COSIGN PRIVATE KEY", Bytes: enc}),
		"plain.key":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"rsa.key":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}),
		"cert.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"garbage.key": []byte("not pem"),
	}
	for n, b := range files {
		os.WriteFile(filepath.Join(dir, n), b, 0o600)
	}
	for _, tc := range []struct {
		file, pass, wantErr string
	}{
		{"cosign.key", "s3cret", ""},
		{"old.key", "s3cret", ""},
		{"plain.key", "", ""},
		{"cosign.key", "wrong", "COSIGN_PASSWORD"},
		{"rsa.key", "", "ECDSA P-256"},
		{"cert.pem", "", `"CERTIFICATE"`},
		{"garbage.key", "", "not PEM"},
		{"missing.key", "", "no such file"},
	} {
		s, err := LoadCosignKey(filepath.Join(dir, tc.file), []byte(tc.pass))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s/%s: error %v, want %q", tc.file, tc.pass, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.file, err)
			continue
		}
		// The loaded key signs bundles that verify against its own public key.
		stmt, _ := Statement([]Subject{{Name: "x", Digest: "sha256:" + strings.Repeat("cd", 32)}}, PredicateSign, nil)
		b, err := s.SignStatement(context.Background(), stmt)
		if err != nil {
			t.Fatal(err)
		}
		tm, _ := TrustedKey(&k.PublicKey, s.Hint())
		v, _ := NewKeyVerifier(tm)
		if _, err := v.VerifyStatement(ctx, b, "sha256:"+strings.Repeat("cd", 32), PredicateSign); err != nil {
			t.Errorf("%s: %v", tc.file, err)
		}
	}
}

// TestLazyVerifierUsesTheCallersContextAndRetries: the keyless verifier is built when
// first used, on the context of that call (so a cancelled run stops it), and a failure
// (Fulcio down) is not kept for the rest of the run.
func TestLazyVerifierUsesTheCallersContextAndRetries(t *testing.T) {
	type key struct{}
	s := seededKey(t, 1)
	tm, _ := s.TrustedMaterial()
	calls := 0
	v := &Verifier{lazy: func(ctx context.Context) (*Verifier, error) {
		calls++
		if ctx.Value(key{}) != "caller" {
			t.Errorf("built on another context than the caller's")
		}
		if calls == 1 {
			return nil, errors.New("fulcio: 503")
		}
		return NewKeyVerifier(tm)
	}}
	ctx := context.WithValue(context.Background(), key{}, "caller")
	good := signed(t, s, []Subject{{Name: "r/x", Digest: digestA}}, PredicateSPDX, []byte(`{}`))
	if _, err := v.VerifyStatement(ctx, good, digestA, PredicateSPDX); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("first call: %v", err)
	}
	for range 2 {
		if _, err := v.VerifyStatement(ctx, good, digestA, PredicateSPDX); err != nil {
			t.Fatalf("after the failure: %v", err)
		}
	}
	if calls != 2 {
		t.Fatalf("built %d times, want 2 (once failed, once kept)", calls)
	}
}
