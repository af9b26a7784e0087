//go:build integration

package oci

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/internal/testutil"
)

// TestIntegrationCopyBetweenRegistryKinds copies a signed two-platform index between the
// in-process registry (referrers API) and Debian's distribution 2.8 (TLS, htpasswd, no
// referrers API: the tag schema), in both directions, and checks every digest and referrer.
func TestIntegrationCopyBetweenRegistryKinds(t *testing.T) {
	ctx := context.Background()
	dist := testutil.StartDistribution(t)
	mem := testutil.Registry(t, true)
	// One transport for both: it trusts the distribution's certificate; the in-process
	// registry is plain HTTP on loopback.
	c, err := New(WithTransport(Retry(dist.Transport, RetryOptions{})), WithKeychain(dist.Keychain()))
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := New(WithTransport(dist.Transport), WithKeychain(authn.NewMultiKeychain()))

	src := mustRepo(t, mem+"/build/app")
	d, err := c.Write(ctx, src, twoPlatformIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := c.Resolve(ctx, d)
	all := []string{r.Digest, r.Manifests[0].Digest, r.Manifests[1].Digest}
	for _, dg := range all {
		subj := src.Digest(dg)
		raw, mt, _ := c.FetchManifest(ctx, subj)
		if _, err := c.AttachBundle(ctx, subj, mt, int64(len(raw)), []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","n":"`+dg+`"}`), "dsse-envelope", "https://sigstore.dev/cosign/sign/v1"); err != nil {
			t.Fatal(err)
		}
	}
	want := referrerSet(t, c, src, all)
	if n := len(strings.Split(want, "\n")); n != 3 {
		t.Fatalf("%d referrers at the source, want 3", n)
	}

	// In-process -> distribution: referrers land in the tag schema.
	toDist := mustRepo(t, dist.Host+"/acme/app")
	out, err := c.Copy(ctx, d, toDist)
	if err != nil {
		t.Fatal(err)
	}
	if out.DigestStr() != d.DigestStr() {
		t.Fatalf("digest changed: %s", out.DigestStr())
	}
	if mode, _ := c.ReferrersMode(ctx, toDist); mode != ReferrersTagSchema {
		t.Fatalf("distribution 2.8 mode %q, want %s", mode, ReferrersTagSchema)
	}
	if got := referrerSet(t, c, toDist, all); got != want {
		t.Fatalf("referrers in distribution:\n%s\nwant:\n%s", got, want)
	}
	// The registry really requires the password.
	if _, err := anon.Resolve(ctx, out); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Fatalf("anonymous read of the htpasswd registry: %v", err)
	}

	// Distribution -> in-process, into another repository: all back through the API.
	back := mustRepo(t, mem+"/mirror/app")
	if _, err := c.Copy(ctx, out, back); err != nil {
		t.Fatal(err)
	}
	if got := referrerSet(t, c, back, all); got != want {
		t.Fatalf("referrers after the round trip:\n%s\nwant:\n%s", got, want)
	}
	// Copying again transfers no new manifest.
	var puts int
	counting := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/manifests/") {
			puts++
		}
		return dist.Transport.RoundTrip(req)
	})
	c2, _ := New(WithTransport(counting), WithKeychain(dist.Keychain()))
	if _, err := c2.Copy(ctx, d, toDist); err != nil {
		t.Fatal(err)
	}
	if puts != 0 {
		t.Fatalf("a repeated copy wrote %d manifests", puts)
	}
}

func referrerSet(t *testing.T, c *Client, repo name.Repository, digests []string) string {
	t.Helper()
	var out []string
	for _, dg := range digests {
		atts, err := c.Bundles(context.Background(), repo.Digest(dg), "")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range atts {
			out = append(out, dg+" "+a.Digest+" "+string(a.Bundle))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
