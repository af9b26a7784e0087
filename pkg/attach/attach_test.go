package attach

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"math/rand"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/oci"
)

// TestEnsureReusesAndFillsIn: the first Ensure signs once and attaches to every
// repository; the next reuses that bundle, copies it to a repository that lacks it and
// signs nothing; a statement Accept refuses is signed anew; VerifyBundle and the classic
// checks see what was attached.
func TestEnsureReusesAndFillsIn(t *testing.T) {
	ctx := context.Background()
	host := testutil.Registry(t, true)
	img, _ := random.Image(64, 1, random.WithSource(rand.New(rand.NewSource(1))))
	d, _ := img.Digest()
	var repos []string
	for _, r := range []string{"acme/a", "acme/b", "acme/c"} {
		ref, _ := name.NewDigest(host + "/" + r + "@" + d.String())
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		repos = append(repos, host+"/"+r)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.New(rand.NewSource(2)))
	signer, _ := attest.NewKeySigner(k)
	tm, _ := signer.TrustedMaterial()
	v, _ := attest.NewKeyVerifier(tm)
	client, _ := oci.New()
	signs := 0
	req := Request{Subject: d.String(), PredicateType: attest.PredicateSign, What: "the signature",
		Statement: func(context.Context) ([]byte, error) {
			signs++
			return attest.Statement([]attest.Subject{{Name: "x", Digest: d.String()}}, attest.PredicateSign, nil)
		}}
	a := &Attacher{Registry: client, Verifier: v, Signer: signer}
	first, err := a.Ensure(ctx, repos[:2], req)
	if err != nil || first.Reused || len(first.Referrers) != 2 || signs != 1 {
		t.Fatalf("first: %+v %v, %d signings", first, err, signs)
	}
	again, err := a.Ensure(ctx, repos, req)
	if err != nil || !again.Reused || signs != 1 || again.Referrers[repos[0]] != first.Referrers[repos[0]] || again.Referrers[repos[2]] == "" {
		t.Fatalf("again: %+v %v, %d signings", again, err, signs)
	}
	for _, r := range repos {
		dg, _ := name.NewDigest(r + "@" + d.String())
		refs, _ := client.Referrers(ctx, dg)
		if len(refs) != 1 {
			t.Errorf("%s: %d referrers, want 1", r, len(refs))
		}
		if _, err := a.VerifyBundle(ctx, Check{Repository: r, Digest: d.String(), PredicateType: attest.PredicateSign}); err != nil {
			t.Errorf("%s: %v", r, err)
		}
	}
	req.Accept = func(*attest.Verified) bool { return false }
	if res, err := a.Ensure(ctx, repos[:1], req); err != nil || res.Reused || signs != 2 {
		t.Fatalf("refused by Accept: %+v %v, %d signings", res, err, signs)
	}
	// Classic: none, then one that verifies, and it is not added twice.
	if err := a.VerifyClassicSignature(ctx, repos[0], d.String()); err == nil {
		t.Fatal("a classic signature where none was made")
	}
	for range 2 {
		if err := a.EnsureClassicSignature(ctx, repos[:1], d.String()); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.VerifyClassicSignature(ctx, repos[0], d.String()); err != nil {
		t.Fatal(err)
	}
	dg, _ := name.NewDigest(repos[0] + "@" + d.String())
	sigs, _ := client.ClassicSignatures(ctx, dg)
	if len(sigs) != 1 {
		t.Fatalf("%d classic signatures after two Ensures, want 1", len(sigs))
	}
	// Verify-only: without a signer nothing new can be attached.
	ro := &Attacher{Registry: client, Verifier: v}
	if _, err := ro.Ensure(ctx, repos[:1], Request{Subject: d.String(), PredicateType: attest.PredicateSLSA, What: "provenance"}); err == nil {
		t.Fatal("attached without a signer")
	}
}
