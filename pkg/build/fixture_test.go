package build

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var update = flag.Bool("update", false, "regenerate testdata fixtures")

// baseFixture is a small two-platform base image (a non-root user, like distroless
// static) kept as an OCI layout in the repository's shared testdata.
const baseFixture = "../../testdata/oci/base"

func TestBaseFixture(t *testing.T) {
	if *update {
		writeBaseFixture(t)
	}
	idx, err := layout.ImageIndexFromPath(baseFixture)
	if err != nil {
		t.Fatalf("%v (regenerate with: go test ./pkg/build -run TestBaseFixture -update)", err)
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		plat, _ := v1.ParsePlatform(p)
		if _, _, err := pickPlatform(idx, *plat, baseFixture); err != nil {
			t.Fatal(err)
		}
	}
	plat, _ := v1.ParsePlatform("linux/s390x")
	if _, _, err := pickPlatform(idx, *plat, baseFixture); err == nil {
		t.Fatal("picked an image for a platform the layout does not have")
	}
}

func TestLocalBuildOnFixtureBase(t *testing.T) {
	ctx := context.Background()
	l, _, repo := setup(t)
	abs, _ := filepath.Abs(baseFixture)
	im := filesImage()
	im.Local.Base = "oci-layout:" + abs
	res, err := l.Build(ctx, request(repo, im))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.BaseImages) != 2 {
		t.Fatalf("base digests %v, want one per platform", res.BaseImages)
	}
	img, err := remote.Image(repo.Digest(res.Platforms[1].Digest))
	if err != nil {
		t.Fatal(err)
	}
	files := listFiles(t, img)
	if _, ok := files["etc/passwd"]; !ok {
		t.Fatalf("base layer missing: %v", files)
	}
	cf, _ := img.ConfigFile()
	if cf.Architecture != "arm64" || cf.Config.User != "65532" {
		t.Fatalf("config %+v", cf)
	}
}

func writeBaseFixture(t *testing.T) {
	epoch := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	layer, err := tarLayer([]tarEntry{
		{name: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "/home/nonroot", mode: 0o755, dir: true},
		{name: "/tmp", mode: 0o1777, dir: true},
	}, epoch)
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(baseFixture)
	lp, err := layout.Write(baseFixture, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.ConfigFile(img, &v1.ConfigFile{
			OS: "linux", Architecture: arch, Created: v1.Time{Time: epoch},
			RootFS: v1.RootFS{Type: "layers", DiffIDs: mustDiffIDs(t, img)},
			Config: v1.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}, User: "65532"},
		})
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	if err := lp.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
}

func mustDiffIDs(t *testing.T, img v1.Image) []v1.Hash {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS.DiffIDs
}
