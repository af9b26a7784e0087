package oci

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/relaydev/relay/internal/testutil"
)

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}

// predicted turns an overlay's writes into testutil.RegistryWrites' terms: a tag or a manifest is one
// PUT of manifests/<ref>.
func predicted(ws []Write) []string {
	var out []string
	for _, w := range ws {
		switch w.Kind {
		case WriteTag:
			out = append(out, "manifest "+w.Repository+" "+w.Tag)
		case WriteManifest, WriteReferrer:
			out = append(out, "manifest "+w.Repository+" "+w.Digest)
		default:
			out = append(out, w.Kind+" "+w.Repository+" "+w.Digest)
		}
	}
	slices.Sort(out)
	return out
}

// release is what the pipeline does to a registry after the build: copy by digest into two
// repositories, attach a bundle, add a classic signature, tag. It returns what reads see
// afterwards.
func release(t *testing.T, c *Client, host string, src name.Digest) string {
	t.Helper()
	ctx := context.Background()
	app, _ := name.NewRepository(host + "/acme/app")
	mirror, _ := name.NewRepository(host + "/acme/mirror")
	outs, err := c.CopyMulti(ctx, src, []name.Repository{app, mirror})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Resolve(ctx, outs[0])
	if err != nil {
		t.Fatal(err)
	}
	ref, err := c.AttachBundle(ctx, outs[0], "application/vnd.oci.image.index.v1+json", res.Size, []byte(`{"bundle":1}`), "dsse-envelope", "https://slsa.dev/provenance/v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddClassicSignature(ctx, outs[0], ClassicSignature{Payload: []byte(`{"critical":{}}`), Signature: base64.StdEncoding.EncodeToString([]byte("sig"))}); err != nil {
		t.Fatal(err)
	}
	for _, d := range outs {
		if err := c.Tag(ctx, d, "v1.0.0"); err != nil {
			t.Fatal(err)
		}
	}
	// Later steps read what earlier ones wrote.
	refs, err := c.Referrers(ctx, outs[0])
	if err != nil {
		t.Fatal(err)
	}
	tagged, err := c.TagDigest(ctx, app.Tag("v1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := c.ClassicSignatures(ctx, outs[0])
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range refs {
		got = append(got, r.Digest.String())
	}
	return fmt.Sprintf("referrers=%v attached=%s tag=%v sigs=%d", got, ref, tagged == outs[0].DigestStr(), len(sigs))
}

// TestOverlayPredictsTheRealWrites runs the same release once through the overlay and once
// for real, against registries with and without the referrers API: the overlay's writes are
// the real registry's write requests, all of them and no more; reads through the overlay
// see its writes; and nothing reaches the registry behind it.
func TestOverlayPredictsTheRealWrites(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers=%v", referrers), func(t *testing.T) {
			var dry, real testutil.RegistryWrites
			dryHost := testutil.Registry(t, referrers, dry.Wrap)
			realHost := testutil.Registry(t, referrers, real.Wrap)
			idx := twoPlatformIndex(t)
			var srcs []name.Digest
			for _, h := range []string{dryHost, realHost} {
				d, _ := idx.Digest()
				src, _ := name.NewDigest(h + "/build/app@" + d.String())
				if err := remote.WriteIndex(src, idx); err != nil {
					t.Fatal(err)
				}
				srcs = append(srcs, src)
			}
			dry.Reset() // the seeding is not part of the run
			real.Reset()

			ov, err := NewOverlay(NewTransport(), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			c := newClient(t)
			dc, err := New(WithTransport(ov), WithJobs(2), WithClock(c.now))
			if err != nil {
				t.Fatal(err)
			}
			dryView := release(t, dc, dryHost, srcs[0])
			realView := release(t, c, realHost, srcs[1])

			if n := len(sorted(dry.List())); n != 0 {
				t.Fatalf("%d writes reached the registry behind the overlay: %v", n, sorted(dry.List()))
			}
			if dryView != realView {
				t.Errorf("reads differ:\n dry  %s\n real %s", dryView, realView)
			}
			want, got := sorted(real.List()), predicted(ov.Writes())
			if !slices.Equal(got, want) {
				t.Errorf("predicted writes differ from the real ones:\n got  %s\n want %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
			}
			kinds := map[string]int{}
			for _, w := range ov.Writes() {
				kinds[w.Kind]++
				if w.Kind == WriteBlob && w.Size <= 0 {
					t.Errorf("blob write without its size: %+v", w)
				}
			}
			if kinds[WriteReferrer] != 1 || kinds[WriteTag] < 3 {
				t.Errorf("write kinds %v: want one referrer, the release and .sig tags", kinds)
			}
			// The in-process registry holds blobs across repositories: the copy finds them present.
			if sk := ov.Skipped(); len(sk[dryHost+"/acme/app"]) == 0 {
				t.Errorf("no skipped blobs recorded: %v", sk)
			}
			// A second identical run writes only what a registry would take again.
			before := len(ov.Writes())
			release(t, dc, dryHost, srcs[0])
			release(t, c, realHost, srcs[1])
			if again, want := predicted(ov.Writes()[before:]), len(sorted(real.List()))-len(want); len(again) != want {
				t.Errorf("re-run: overlay predicted %d writes, the registry took %d", len(again), want)
			}
		})
	}
}

func TestParseRegPath(t *testing.T) {
	for _, tc := range []struct{ in, repo, kind, ref string }{
		{"/v2/acme/app/blobs/uploads/", "acme/app", "uploads", ""},
		{"/v2/acme/app/blobs/uploads/abc", "acme/app", "upload", "abc"},
		{"/v2/a/b/c/blobs/sha256:00", "a/b/c", "blob", "sha256:00"},
		{"/v2/acme/app/manifests/v1", "acme/app", "manifest", "v1"},
		{"/v2/acme/manifests/app/manifests/v1", "acme/manifests/app", "manifest", "v1"},
		{"/v2/acme/app/referrers/sha256:00", "acme/app", "referrers", "sha256:00"},
		{"/v2/acme/app/tags/list", "acme/app", "tags", ""},
	} {
		u, _ := url.Parse("http://h" + tc.in)
		p, ok := parseRegPath(u.Path)
		if !ok || p.repo != tc.repo || p.kind != tc.kind || p.ref != tc.ref {
			t.Errorf("%s: got %+v %v", tc.in, p, ok)
		}
	}
	for _, bad := range []string{"/v2/", "/v2/token", "/token", "/v2/tags/list"} {
		if p, ok := parseRegPath(bad); ok {
			t.Errorf("%s parsed as %+v", bad, p)
		}
	}
}

func TestOverlayRefusesWhatItDoesNotModel(t *testing.T) {
	ov, err := NewOverlay(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		t.Errorf("%s %s reached the registry", r.Method, r.URL)
		return nil, fmt.Errorf("no")
	}), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPatch, "http://r.example/v2/acme/app/manifests/v1", nil)
	resp, err := ov.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("PATCH of a manifest: %v %v", resp, err)
	}
	// A commit whose bytes do not match its digest is refused, as a registry refuses it.
	post, _ := http.NewRequest(http.MethodPost, "http://r.example/v2/acme/app/blobs/uploads/", nil)
	resp, _ = ov.RoundTrip(post)
	loc, _ := post.URL.Parse(resp.Header.Get("Location"))
	put, _ := http.NewRequest(http.MethodPut, loc.String()+"?digest=sha256:"+strings.Repeat("0", 64), strings.NewReader("data"))
	if resp, _ := ov.RoundTrip(put); resp.StatusCode != http.StatusBadRequest || len(ov.Writes()) != 0 {
		t.Fatalf("a wrong digest: %d, writes %v", resp.StatusCode, ov.Writes())
	}
}
