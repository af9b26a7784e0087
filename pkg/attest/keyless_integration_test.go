//go:build integration

package attest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/oci"
)

type countingTokens struct {
	TokenSource
	calls atomic.Int32
}

func (c *countingTokens) Token(ctx context.Context) (string, error) {
	c.calls.Add(1)
	return c.TokenSource.Token(ctx)
}

// TestIntegrationKeyless signs a signature and an SBOM attestation keylessly against a
// local Sigstore (Fulcio, Rekor v2, TSA, OIDC issuer), attaches them to an image as OCI
// referrers, and has sigstore-go and cosign v2's and v3's own verify code accept them; wrong
// identities, issuers, digests and tampered payloads are rejected.
func TestIntegrationKeyless(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	st := testutil.StartSigstore(t)
	ctx := context.Background()
	sc, err := root.NewSigningConfigFromPath(st.SigningConfig)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := root.NewTrustedRootFromPath(st.TrustedRoot)
	if err != nil {
		t.Fatal(err)
	}
	const email = "release-bot@example.com"
	tokFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokFile, []byte(st.OIDC.Token(t, email)+"\n"), 0o600)
	tokens := &countingTokens{TokenSource: fileToken(tokFile)}
	signer, err := NewKeylessSigner(KeylessOptions{SigningConfig: sc, TrustedRoot: tr, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	// Rekor v2 gives no signed entry timestamp, so no classic signature can be made here.
	if _, err := signer.SignClassic(ctx, []byte(`{}`)); signer.CanSignClassic() || !errors.Is(err, ErrClassicNeedsRekorV1) {
		t.Fatalf("classic signature on Rekor v2: %v", err)
	}

	reg := testutil.Registry(t, true)
	c, _ := oci.New()
	repo, _ := name.NewRepository(reg + "/acme/app")
	img, _ := random.Image(512, 1)
	d, err := c.Write(ctx, repo, img)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := c.Write(ctx, repo, mustRandom(t))
	subject := []Subject{{Name: repo.String(), Digest: d.DigestStr()}}
	sigStmt, _ := Statement(subject, PredicateSign, nil)
	sbomStmt, _ := Statement(subject, PredicateSPDX, []byte(`{"spdxVersion":"SPDX-2.3","name":"app"}`))
	sigBundle, err := signer.SignStatement(ctx, sigStmt)
	if err != nil {
		t.Fatal(err)
	}
	sbomBundle, err := signer.SignStatement(ctx, sbomStmt)
	if err != nil {
		t.Fatal(err)
	}
	if n := tokens.calls.Load(); n != 1 {
		t.Fatalf("%d certificates for two signatures, want one per run", n)
	}
	if !strings.Contains(signer.Identity(), email) {
		t.Fatalf("identity %q", signer.Identity())
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(sigBundle); err != nil {
		t.Fatal(err)
	}
	if len(b.VerificationMaterial.GetTlogEntries()) != 1 || b.VerificationMaterial.GetTimestampVerificationData() == nil {
		t.Fatal("the bundle lacks its Rekor entry or its signed timestamp")
	}

	good := IdentityPolicy{Identity: email, Issuer: st.OIDC.URL}
	tampered := bytes.Replace(sigBundle, []byte(`"payload":"`), []byte(`"payload":"AA`), 1)
	for _, tc := range []struct {
		name   string
		policy IdentityPolicy
		bundle []byte
		digest string
		ok     bool
	}{
		{"exact identity", good, sigBundle, d.DigestStr(), true},
		{"identity regexp", IdentityPolicy{IdentityRegexp: `^release-bot@example\.com$`, IssuerRegexp: `^http://127\.0\.0\.1:`}, sigBundle, d.DigestStr(), true},
		{"wrong identity", IdentityPolicy{Identity: "mallory@example.com", Issuer: st.OIDC.URL}, sigBundle, d.DigestStr(), false},
		{"wrong issuer", IdentityPolicy{Identity: email, Issuer: "https://token.actions.githubusercontent.com"}, sigBundle, d.DigestStr(), false},
		{"another digest", good, sigBundle, other.DigestStr(), false},
		{"tampered payload", good, tampered, d.DigestStr(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewIdentityVerifier(tr, tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.VerifyStatement(ctx, tc.bundle, tc.digest, PredicateSign)
			if (err == nil) != tc.ok {
				t.Fatalf("verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}

	// Attach as cosign v3 does (OCI 1.1 referrers in BUNDLE_SPEC layout) and let cosign v2 judge.
	raw, mt, _ := c.FetchManifest(ctx, d)
	for _, a := range []struct {
		b    []byte
		pred string
	}{{sigBundle, PredicateSign}, {sbomBundle, PredicateSPDX}} {
		if _, err := c.AttachBundle(ctx, d, mt, int64(len(raw)), a.b, "dsse-envelope", a.pred); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []struct{ name, bin string }{{"cosign v2", st.Cosign}, {"cosign v3", st.Cosign3}} {
		cosign := func(args ...string) (string, error) {
			base := []string{"--allow-insecure-registry", "--trusted-root", st.TrustedRoot,
				"--use-signed-timestamps", "--insecure-ignore-sct", "--certificate-oidc-issuer", st.OIDC.URL}
			if v.bin == st.Cosign {
				base = append(base, "--new-bundle-format") // v3 reads bundles by default
			}
			cmd := exec.Command(v.bin, append(append(args[:1:1], base...), args[1:]...)...)
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		if out, err := cosign("verify", "--certificate-identity", email, d.String()); err != nil {
			t.Fatalf("%s verify rejected relay's signature: %v\n%s", v.name, err, out)
		}
		if out, err := cosign("verify-attestation", "--type", "spdxjson", "--certificate-identity", email, d.String()); err != nil {
			t.Fatalf("%s verify-attestation rejected relay's SBOM attestation: %v\n%s", v.name, err, out)
		}
		if out, err := cosign("verify", "--certificate-identity", "mallory@example.com", d.String()); err == nil {
			t.Fatalf("%s accepted the wrong identity:\n%s", v.name, out)
		}
	}
}

// TestIntegrationKeylessRekorOutage puts a Rekor that answers 503 for a while in front of
// the real one: signing waits it out within the budget and the bundle verifies.
func TestIntegrationKeylessRekorOutage(t *testing.T) {
	ctx := context.Background()
	if !testutil.InNetNS(t) {
		return
	}
	st := testutil.StartSigstore(t)
	sc, _ := root.NewSigningConfigFromPath(st.SigningConfig)
	tr, _ := root.NewTrustedRootFromPath(st.TrustedRoot)
	target, _ := url.Parse(st.RekorURL)
	var mu sync.Mutex
	failures, seen, status := 3, 0, http.StatusServiceUnavailable
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen++
		fail := failures > 0
		if fail {
			failures--
		}
		mu.Unlock()
		if fail {
			http.Error(w, "rekor is having a bad ten minutes", status)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	since := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	sc = sc.WithRekorLogURLs(root.Service{URL: proxy.URL, MajorAPIVersion: 2, ValidityPeriodStart: since, Operator: "local"})

	var waits []time.Duration
	tokFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokFile, []byte(st.OIDC.Token(t, "bot@example.com")), 0o600)
	var logs bytes.Buffer
	signer, err := NewKeylessSigner(KeylessOptions{
		SigningConfig: sc, TrustedRoot: tr, Tokens: fileToken(tokFile), Budget: time.Minute,
		Sleep:  func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil },
		Logger: newJSONLogger(&logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	stmt, _ := Statement([]Subject{{Name: "x", Digest: "sha256:" + strings.Repeat("ab", 32)}}, PredicateSign, nil)
	b, err := signer.SignStatement(context.Background(), stmt)
	if err != nil {
		t.Fatalf("signing through a Rekor outage: %v", err)
	}
	v, _ := NewIdentityVerifier(tr, IdentityPolicy{Identity: "bot@example.com", Issuer: st.OIDC.URL})
	if _, err := v.VerifyStatement(ctx, b, "sha256:"+strings.Repeat("ab", 32), PredicateSign); err != nil {
		t.Fatal(err)
	}
	if len(waits) == 0 || !strings.Contains(logs.String(), `"attempt":1`) {
		t.Fatalf("no retry was logged (waits %v):\n%s", waits, logs.String())
	}
	// Past the budget the error says so.
	mu.Lock()
	failures = 1 << 30
	mu.Unlock()
	signer2, _ := NewKeylessSigner(KeylessOptions{SigningConfig: sc, TrustedRoot: tr, Tokens: fileToken(tokFile), Budget: 3 * time.Second,
		Sleep: func(context.Context, time.Duration) error { return nil }})
	_, err = signer2.SignStatement(context.Background(), stmt)
	if err == nil || !strings.Contains(err.Error(), "retry budget of 3s") {
		t.Fatalf("outage past the budget: %v", err)
	}

	// A refusal fails at once, told by its status, not by what its text says: a log that
	// will not take the entry, and a Fulcio that refuses the token.
	mu.Lock()
	status = http.StatusUnprocessableEntity
	mu.Unlock()
	var refusedWaits []time.Duration
	sleep := func(_ context.Context, d time.Duration) error { refusedWaits = append(refusedWaits, d); return nil }
	signer3, _ := NewKeylessSigner(KeylessOptions{SigningConfig: sc, TrustedRoot: tr, Tokens: fileToken(tokFile), Budget: time.Minute, Sleep: sleep})
	_, err = signer3.SignStatement(context.Background(), stmt)
	var re *RefusedError
	if !errors.As(err, &re) || re.Status != http.StatusUnprocessableEntity || len(refusedWaits) != 0 {
		t.Fatalf("a log's refusal: %v after %d waits", err, len(refusedWaits))
	}
	fulcio := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"code":16,"message":"the token is not for this audience"}`, http.StatusUnauthorized)
	}))
	defer fulcio.Close()
	noFulcio := sc.WithFulcioCertificateAuthorityURLs(root.Service{URL: fulcio.URL, MajorAPIVersion: 1, ValidityPeriodStart: since, Operator: "local"})
	signer4, _ := NewKeylessSigner(KeylessOptions{SigningConfig: noFulcio, TrustedRoot: tr, Tokens: fileToken(tokFile), Budget: time.Minute, Sleep: sleep})
	if _, err = signer4.SignStatement(context.Background(), stmt); err == nil || !strings.Contains(err.Error(), "401") || len(refusedWaits) != 0 {
		t.Fatalf("Fulcio's refusal: %v after %d waits", err, len(refusedWaits))
	}
}

func mustRandom(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func newJSONLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }
