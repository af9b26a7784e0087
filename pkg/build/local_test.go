package build

import (
	"archive/tar"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/relaydev/relay/pkg/oci"
)

func setup(t *testing.T) (*Local, *oci.Client, name.Repository) {
	t.Helper()
	c, err := oci.New()
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(LocalOptions{Client: c, ConfigDir: t.TempDir(), Jobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(testutil.Registry(t, false) + "/build/tiny")
	return l, c, repo
}

func request(repo name.Repository, im Image) Request {
	ctxDir, _ := filepath.Abs("testdata/ctx")
	return Request{Image: im, ContextDir: ctxDir, Repository: repo, Source: SourceInfo{
		Repo: "https://example.com/tiny.git", Commit: "0123456789abcdef0123456789abcdef01234567", Tag: "v0.3.0",
		CommitTime: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
	}}
}

func filesImage() Image {
	return Image{Name: "tiny", Platforms: []string{"linux/amd64", "linux/arm64"}, Local: &LocalSpec{
		Base:  "scratch",
		Files: []File{{Src: "static", Dst: "/srv/static"}, {Src: "static/a.txt", Dst: "/etc/a.txt", Mode: "0600"}},
		Env:   []string{"A=1"}, User: "65532", Workdir: "/srv", Ports: []string{"8080"}, Cmd: []string{"serve"},
		Entrypoint: []string{"/bin/x"}, Labels: map[string]string{"k": "v"},
	}}
}

func TestLocalBuildIsReproducibleIndex(t *testing.T) {
	ctx := context.Background()
	l, c, repo := setup(t)
	a, err := l.Build(ctx, request(repo, filesImage()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Build(ctx, request(repo, filesImage()))
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest || len(a.Platforms) != 2 || a.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("builds differ or not an index: %+v / %+v", a, b)
	}
	if !strings.HasPrefix(a.Ref, repo.String()+"@sha256:") {
		t.Fatalf("ref %s", a.Ref)
	}
	if ok, _ := c.Exists(ctx, repo.Digest(a.Platforms[1].Digest)); !ok {
		t.Fatal("platform manifest not pushed")
	}
	img, err := remote.Image(repo.Digest(a.Platforms[1].Digest))
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	if cf.Architecture != "arm64" || cf.Config.User != "65532" || cf.Config.WorkingDir != "/srv" || cf.Config.Entrypoint[0] != "/bin/x" ||
		cf.Config.Labels["org.opencontainers.image.revision"] != "0123456789abcdef0123456789abcdef01234567" ||
		cf.Config.Labels["org.opencontainers.image.version"] != "v0.3.0" || cf.Config.Labels["k"] != "v" ||
		!cf.Created.Time.Equal(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)) {
		t.Fatalf("config %+v", cf.Config)
	}
	if _, ok := cf.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Fatal("port not exposed")
	}
	files := listFiles(t, img)
	for p, mode := range map[string]int64{"srv/static/a.txt": 0o644, "srv/static/run.sh": 0o755, "etc/a.txt": 0o600, "srv/": 0o755} {
		if got, ok := files[p]; !ok || got != mode {
			t.Errorf("%s: mode %o present %v (files %v)", p, got, ok, files)
		}
	}
}

func TestLocalBuildGoBinaryFromOCILayoutBase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go binary")
	}
	ctx := context.Background()
	l, _, repo := setup(t)
	base, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	base, _ = mutate.ConfigFile(base, &v1.ConfigFile{OS: "linux", Architecture: "amd64", Config: v1.Config{Env: []string{"PATH=/bin", "A=0"}}})
	lp, err := layout.Write(filepath.Join(l.o.ConfigDir, "base"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(base, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	baseDigest, _ := base.Digest()
	im := Image{Name: "tiny", Platforms: []string{"linux/amd64"}, Local: &LocalSpec{
		Base: "oci-layout:base", Go: &GoSpec{Main: "./cmd/tiny", Binary: "/tiny"}, Env: []string{"A=1"},
	}}
	res, err := l.Build(ctx, request(repo, im))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Platforms) != 1 || res.MediaType != "application/vnd.oci.image.manifest.v1+json" || res.Platforms[0].Digest != res.Digest {
		t.Fatalf("single platform result %+v", res)
	}
	if len(res.BaseImages) != 1 || res.BaseImages[0] != baseDigest.String() {
		t.Fatalf("base images %v, want %s", res.BaseImages, baseDigest)
	}
	if !strings.Contains(string(res.Log), "go build") {
		t.Fatalf("build log %q", res.Log)
	}
	img, _ := remote.Image(repo.Digest(res.Digest))
	cf, _ := img.ConfigFile()
	if cf.Config.Entrypoint[0] != "/tiny" || strings.Join(cf.Config.Env, ",") != "PATH=/bin,A=1" {
		t.Fatalf("config %+v", cf.Config)
	}
	if ls, _ := img.Layers(); len(ls) != 2 {
		t.Fatalf("%d layers, want base + binary", len(ls))
	}
	if files := listFiles(t, img); files["tiny"] != 0o755 {
		t.Fatalf("binary missing: %v", files)
	}
	again, err := l.Build(ctx, request(repo, im))
	if err != nil || again.Digest != res.Digest {
		t.Fatalf("Go build not reproducible: %s vs %s (%v)", res.Digest, again.Digest, err)
	}
}

func TestLocalBuildErrors(t *testing.T) {
	ctx := context.Background()
	l, _, repo := setup(t)
	tests := []struct {
		name string
		im   Image
		want string
	}{
		{"missing file", Image{Name: "x", Platforms: []string{"linux/amd64"}, Local: &LocalSpec{Base: "scratch", Files: []File{{Src: "nope", Dst: "/x"}}}}, "nope"},
		{"escaping file", Image{Name: "x", Platforms: []string{"linux/amd64"}, Local: &LocalSpec{Base: "scratch", Files: []File{{Src: "../../go.mod", Dst: "/x"}}}}, "leaves the build context"},
		{"missing layout", Image{Name: "x", Platforms: []string{"linux/amd64"}, Local: &LocalSpec{Base: "oci-layout:nope", Files: []File{{Src: "static", Dst: "/x"}}}}, "reading OCI layout"},
		{"no local", Image{Name: "x", Platforms: []string{"linux/amd64"}}, "no `local:`"},
		{"no binary path", Image{Name: "x", Platforms: []string{"linux/amd64"}, Local: &LocalSpec{Base: "scratch", Go: &GoSpec{Main: "."}}}, "not an absolute path"},
		{"bad go package", Image{Name: "x", Platforms: []string{"linux/amd64"}, Local: &LocalSpec{Base: "scratch", Go: &GoSpec{Main: "./cmd/nope", Binary: "/x"}}}, "building ./cmd/nope for linux/amd64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Build(ctx, request(repo, tt.im))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func listFiles(t *testing.T, img v1.Image) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	ls, _ := img.Layers()
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			out[h.Name] = h.Mode
		}
		rc.Close()
	}
	return out
}
