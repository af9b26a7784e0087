//go:build integration

package build

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/oci"
)

// TestIntegrationRegistryBaseOnDistribution builds on a base in Debian's distribution 2.8
// (TLS, htpasswd, token-less basic auth): within the registry the base's layers are mounted
// across repositories with the credentials, never read (the client's requests are logged).
func TestIntegrationRegistryBaseOnDistribution(t *testing.T) {
	ctx := context.Background()
	d := testutil.StartDistribution(t)
	var mu sync.Mutex
	var gets []string
	logged := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			mu.Lock()
			gets = append(gets, r.URL.Path)
			mu.Unlock()
		}
		return d.Transport.RoundTrip(r)
	})
	c, err := oci.New(oci.WithTransport(oci.Retry(logged, oci.RetryOptions{})), oci.WithKeychain(d.Keychain()))
	if err != nil {
		t.Fatal(err)
	}
	baseRepo, _ := name.NewRepository(d.Host + "/library/debian")
	idx, per := testutil.PushBaseWith(t, baseRepo, "12", []remote.Option{remote.WithTransport(d.Transport), remote.WithAuthFromKeychain(d.Keychain())}, "linux/amd64", "linux/arm64")
	baseLayers := map[string]bool{}
	for _, dg := range per {
		img, err := c.Image(ctx, baseRepo.Digest(dg))
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := img.Layers()
		for _, l := range ls {
			h, _ := l.Digest()
			baseLayers[h.String()] = true
		}
	}
	l, err := NewLocal(LocalOptions{Client: c, ConfigDir: t.TempDir(), Jobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(d.Host + "/build/tiny")
	im := filesImage()
	im.Local.Base = d.Host + "/library/debian:12@" + idx.DigestStr()
	mu.Lock()
	gets = nil
	mu.Unlock()
	res, err := l.Build(ctx, request(repo, im))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, g := range gets {
		if baseLayers[g[strings.LastIndex(g, "/")+1:]] {
			t.Errorf("the build read a base layer: GET %s", g)
		}
	}
	mu.Unlock()
	for i, p := range res.Platforms {
		img, err := c.Image(ctx, repo.Digest(p.Digest))
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := img.Layers()
		if h, _ := ls[0].Digest(); !baseLayers[h.String()] {
			t.Errorf("%s: first layer %s is not the base's", p.Platform, h)
		}
		if _, err := ls[0].Compressed(); err != nil { // the mounted blob is really in build/tiny
			t.Errorf("%s: the base layer is not readable from the build repository: %v", p.Platform, err)
		}
		if res.Bases[i].Index != idx.DigestStr() {
			t.Errorf("%s: base %+v", p.Platform, res.Bases[i])
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
