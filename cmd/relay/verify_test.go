package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/oci"
)

// TestVerifyImage runs `relay verify IMAGE` as a consumer would, against an index whose
// index and platforms are signed with a key, and one platform left unsigned.
func TestVerifyImage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c, _ := oci.New()
	repo, _ := name.NewRepository(testutil.Registry(t, true) + "/acme/app")
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, _ := random.Image(256, 1)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	d, err := c.Write(ctx, repo, mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := c.Resolve(ctx, d)
	key, err := attest.LoadOrCreateKey(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKeyPEM()
	os.WriteFile(filepath.Join(dir, "relay-signing.pub"), pub, 0o644)
	other, _ := attest.LoadOrCreateKey(filepath.Join(dir, "other.pem"))
	otherPub, _ := other.PublicKeyPEM()
	os.WriteFile(filepath.Join(dir, "other.pub"), otherPub, 0o644)

	attach := func(s attest.Signer, digest, pred string, predicate []byte) {
		t.Helper()
		stmt, _ := attest.Statement([]attest.Subject{{Name: repo.String(), Digest: digest}}, pred, predicate)
		b, err := s.SignStatement(ctx, stmt)
		if err != nil {
			t.Fatal(err)
		}
		subj := repo.Digest(digest)
		raw, mt, _ := c.FetchManifest(ctx, subj)
		if _, err := c.AttachBundle(ctx, subj, mt, int64(len(raw)), b, "dsse-envelope", pred); err != nil {
			t.Fatal(err)
		}
	}
	attach(key, d.DigestStr(), attest.PredicateSign, nil)
	attach(key, r.Manifests[0].Digest, attest.PredicateSign, nil)
	attach(key, r.Manifests[0].Digest, attest.PredicateSPDX, []byte(`{"spdxVersion":"SPDX-2.3"}`))
	attach(other, r.Manifests[1].Digest, attest.PredicateSign, nil) // signed, but by someone else

	code, out, stderr := runCLI(t, nil, "verify", d.String(), "--key", filepath.Join(dir, "relay-signing.pub"))
	if code != 1 || !strings.Contains(out, r.Manifests[1].Digest+" linux/arm64: NOT VERIFIED") || !strings.Contains(stderr, "1 manifest(s) lack a valid signature") {
		t.Fatalf("one platform signed by another key: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{d.DigestStr() + " index: verified", r.Manifests[0].Digest + " linux/amd64: verified", "attestations: https://spdx.dev/Document", "signed by key"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// A cosign classic .sig signature by the key counts as well.
	payload, _ := attest.SimpleSigningPayload(repo.String(), r.Manifests[1].Digest)
	sig, _ := key.SignBlob(context.Background(), payload)
	if err := c.AddClassicSignature(ctx, repo.Digest(r.Manifests[1].Digest), oci.ClassicSignature{Payload: payload, Signature: sig}); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := runCLI(t, nil, "verify", d.String(), "--key", filepath.Join(dir, "relay-signing.pub")); code != 0 || !strings.Contains(out, "signed by key (cosign classic .sig)") {
		t.Fatalf("classic signature: exit %d\n%s\n%s", code, out, stderr)
	}
	attach(key, r.Manifests[1].Digest, attest.PredicateSign, nil)
	if code, out, stderr := runCLI(t, nil, "verify", d.String(), "--key", filepath.Join(dir, "relay-signing.pub"), "--output", "json"); code != 0 || !strings.Contains(out, `"signers"`) {
		t.Fatalf("all signed: exit %d\n%s\n%s", code, out, stderr)
	}
	// The other key verifies nothing here.
	if code, _, _ := runCLI(t, nil, "verify", d.String(), "--key", filepath.Join(dir, "other.pub")); code != 1 {
		t.Fatalf("another key: exit %d", code)
	}
	// Keyless without an identity would accept anyone: refused before any network use.
	for _, args := range [][]string{
		{"verify", d.String(), "--certificate-oidc-issuer", "https://token.actions.githubusercontent.com"},
		{"verify", d.String(), "--certificate-identity", "a@example.com"},
		{"verify", "not a ref", "--key", "x"},
		{"verify", d.String(), d.String()},
	} {
		if code, _, stderr := runCLI(t, nil, args...); code != exitUsage || stderr == "" {
			t.Errorf("%v: exit %d, %s", args, code, stderr)
		}
	}
	// RELAY_* environment variables stand in for the flags.
	env := map[string]string{"RELAY_KEY": filepath.Join(dir, "relay-signing.pub")}
	if code, _, stderr := runCLI(t, env, "verify", d.String()); code != 0 {
		t.Fatalf("RELAY_KEY: exit %d %s", code, stderr)
	}
}

func TestFlagsFirst(t *testing.T) {
	app := newApp(nil, nil, func(string) string { return "" }, nil)
	for _, tc := range []struct{ in, want string }{
		{"relay copy SRC DST --tag v1 --tag latest", "relay copy --tag v1 --tag latest SRC DST"},
		{"relay copy --tag=v1 SRC DST1 DST2 --jobs 8", "relay copy --tag=v1 --jobs 8 SRC DST1 DST2"},
		{"relay verify IMG --no-tlog --key k.pub", "relay verify --no-tlog --key k.pub IMG"},
		{"relay run --local", "relay run --local"},
		{"relay copy SRC -- --weird", "relay copy SRC -- --weird"},
		{"relay nosuch a --b", "relay nosuch a --b"},
		// Global flags before the command are the command's.
		{"relay --config ci.yaml --local run --only build", "relay run --config ci.yaml --local --only build"},
		{"relay --log-format=text copy SRC DST --tag v1", "relay copy --log-format=text --tag v1 SRC DST"},
		{"relay --state s.json sign", "relay sign --state s.json"},
		{"relay --version", "relay --version"},
		{"relay --local --help", "relay --local --help"},
		{"relay --local nosuch", "relay --local nosuch"},
	} {
		if got := strings.Join(flagsFirst(app, strings.Fields(tc.in)), " "); got != tc.want {
			t.Errorf("%q -> %q, want %q", tc.in, got, tc.want)
		}
	}
}
