package oci

import (
	"context"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/relaydev/relay/internal/testutil"
)

func TestCopyPlatforms(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	src := mustRepo(t, testutil.Registry(t, true)+"/build/app")
	d, err := c.Write(ctx, src, bigIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	all, _ := c.Resolve(ctx, d)
	dst := mustRepo(t, testutil.Registry(t, true)+"/acme/app")
	want := []v1.Platform{{OS: "linux", Architecture: "arm64"}, {OS: "linux", Architecture: "s390x"}}
	out, err := c.CopyPlatforms(ctx, d, dst, want)
	if err != nil {
		t.Fatal(err)
	}
	if out.DigestStr() == d.DigestStr() {
		t.Fatal("a subset index kept the full index's digest")
	}
	r, err := c.Resolve(ctx, out)
	if err != nil || len(r.Manifests) != 2 || r.Manifests[0].Platform != "linux/arm64" || r.Manifests[1].Platform != "linux/s390x" {
		t.Fatalf("subset %+v %v", r, err)
	}
	// The children keep their digests.
	if r.Manifests[0].Digest != all.Manifests[1].Digest || r.Manifests[1].Digest != all.Manifests[3].Digest {
		t.Fatalf("children changed: %+v vs %+v", r.Manifests, all.Manifests)
	}
	if ok, _ := c.Exists(ctx, dst.Digest(all.Manifests[0].Digest)); ok {
		t.Fatal("an unrequested platform was copied")
	}

	empty := mustRepo(t, testutil.Registry(t, true)+"/acme/none")
	_, err = c.CopyPlatforms(ctx, d, empty, []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "windows", Architecture: "amd64"}})
	if err == nil || !strings.Contains(err.Error(), "no windows/amd64 image") || !strings.Contains(err.Error(), "linux/ppc64le") {
		t.Fatalf("unknown platform: %v", err)
	}
	if ok, _ := c.Exists(ctx, empty.Digest(all.Manifests[0].Digest)); ok {
		t.Fatal("a failed subset copy wrote a platform")
	}
}
