package build

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/oci"
)

// blobGets logs the registry's blob GETs by repository and digest.
type blobGets struct {
	mu  sync.Mutex
	got []string
}

func (b *blobGets) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			b.mu.Lock()
			b.got = append(b.got, r.URL.Path)
			b.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func (b *blobGets) list() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.got...)
}

// TestLocalBuildOnRegistryBase builds a Go main for amd64 and arm64 on a base pulled from a
// registry: each platform gets its own binary on the base's matching image, the base's
// config is inherited where relay.yaml says nothing, the base's layers are mounted and never
// read, and the images record their base.
func TestLocalBuildOnRegistryBase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go binary per platform")
	}
	ctx := context.Background()
	var gets blobGets
	host := testutil.Registry(t, true, gets.wrap)
	c, err := oci.New()
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(LocalOptions{Client: c, ConfigDir: t.TempDir(), Jobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	baseRepo, _ := name.NewRepository(host + "/library/debian")
	idx, perPlatform := testutil.PushBase(t, baseRepo, "12", "linux/amd64", "linux/arm64/v8")
	baseLayers := map[string]bool{}
	for _, d := range perPlatform {
		img, _ := c.Image(ctx, baseRepo.Digest(d))
		ls, _ := img.Layers()
		for _, l := range ls {
			h, _ := l.Digest()
			baseLayers[h.String()] = true
		}
	}
	repo, _ := name.NewRepository(host + "/build/tiny")
	im := Image{Name: "tiny", Platforms: []string{"linux/amd64", "linux/arm64"}, Local: &LocalSpec{
		Base: host + "/library/debian:12@" + idx.DigestStr(), Go: &GoSpec{Main: "./cmd/tiny", Binary: "/usr/local/bin/tiny"},
		Env: []string{"A=1", "PATH=/usr/local/bin:/usr/bin:/bin"}, Workdir: "/work", Labels: map[string]string{"k": "v"},
	}}
	before := len(gets.list())
	res, err := l.Build(ctx, request(repo, im))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gets.list()[before:] {
		if d := g[strings.LastIndex(g, "/")+1:]; baseLayers[d] {
			t.Errorf("the build read a base layer: GET %s", g)
		}
	}
	wantMachine := map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64}
	if len(res.Bases) != 2 {
		t.Fatalf("bases %+v, want one per platform", res.Bases)
	}
	for i, p := range res.Platforms {
		b := res.Bases[i]
		want := perPlatform[map[string]string{"linux/amd64": "linux/amd64", "linux/arm64": "linux/arm64/v8"}[p.Platform]]
		if b.Platform != p.Platform || b.Digest != want || b.Index != idx.DigestStr() || b.Name != host+"/library/debian:12" {
			t.Errorf("%s: base %+v, want digest %s of index %s", p.Platform, b, want, idx.DigestStr())
		}
		img, err := remote.Image(repo.Digest(p.Digest))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := img.Manifest()
		if m.Annotations["org.opencontainers.image.base.name"] != host+"/library/debian:12" || m.Annotations["org.opencontainers.image.base.digest"] != want {
			t.Errorf("%s: annotations %v", p.Platform, m.Annotations)
		}
		cf, _ := img.ConfigFile()
		cfg := cf.Config
		if cfg.User != "1001" || cfg.WorkingDir != "/work" || strings.Join(cfg.Env, ",") != "PATH=/usr/local/bin:/usr/bin:/bin,RUNNER_MANUALLY_TRAP_SIG=1,A=1" ||
			cfg.Labels["org.opencontainers.image.vendor"] != "base" || cfg.Labels["k"] != "v" || len(cfg.ExposedPorts) != 1 ||
			strings.Join(cfg.Entrypoint, " ") != "/home/runner/run.sh" {
			t.Errorf("%s: config not inherited and overridden as configured: %+v", p.Platform, cfg)
		}
		ls, _ := img.Layers()
		if len(ls) != 2 {
			t.Fatalf("%s: %d layers, want the base's and the binary's", p.Platform, len(ls))
		}
		if h, _ := ls[0].Digest(); !baseLayers[h.String()] {
			t.Errorf("%s: first layer %s is not the base's", p.Platform, h)
		}
		bin := fileFromLayer(t, ls[1], "usr/local/bin/tiny")
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil || f.Machine != wantMachine[p.Platform] {
			t.Errorf("%s: binary is %v (%v), want %v", p.Platform, f.Machine, err, wantMachine[p.Platform])
		}
	}
	again, err := l.Build(ctx, request(repo, im))
	if err != nil || again.Digest != res.Digest {
		t.Fatalf("not reproducible on a registry base: %s then %s (%v)", res.Digest, again.Digest, err)
	}
}

// fileFromLayer reads one file of a layer.
func fileFromLayer(t *testing.T, l v1.Layer, path string) []byte {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the layer: %v", path, err)
		}
		if strings.TrimPrefix(h.Name, "/") == path {
			b, _ := io.ReadAll(tr)
			return b
		}
	}
}

// TestRegistryBaseErrors: a base that cannot serve the build is refused, naming the base and
// the fix, before anything is pushed.
func TestRegistryBaseErrors(t *testing.T) {
	ctx := context.Background()
	var pushes sync.Map
	host := testutil.Registry(t, true, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead && strings.Contains(r.URL.Path, "/build/") {
				pushes.Store(r.URL.Path, true)
			}
			next.ServeHTTP(w, r)
		})
	})
	c, _ := oci.New()
	l, _ := NewLocal(LocalOptions{Client: c, ConfigDir: t.TempDir(), Jobs: 2})
	amdOnly, _ := name.NewRepository(host + "/base/amd")
	idx, per := testutil.PushBase(t, amdOnly, "12", "linux/amd64")
	single, _ := name.NewRepository(host + "/base/single")
	img, _ := c.Image(ctx, amdOnly.Digest(per["linux/amd64"]))
	sd, _ := c.Write(ctx, single, img)
	notImage, _ := name.NewRepository(host + "/base/artifact")
	art := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), "application/vnd.example.thing")
	art, _ = mutate.Append(art, mutate.Addendum{Layer: static.NewLayer([]byte("x"), "application/vnd.example.blob")})
	ad, _ := c.Write(ctx, notImage, art)

	repo, _ := name.NewRepository(host + "/build/tiny")
	for _, tc := range []struct {
		name, base string
		platforms  []string
		want       []string
	}{
		{"no arm64", host + "/base/amd:12@" + idx.DigestStr(), []string{"linux/amd64", "linux/arm64"}, []string{"has no image for linux/arm64", "it has linux/amd64", "build only the platforms"}},
		{"single manifest, two platforms", host + "/base/single@" + sd.DigestStr(), []string{"linux/amd64", "linux/arm64"}, []string{"single-platform image (linux/amd64)", "2 platforms"}},
		{"tag that does not resolve", host + "/base/amd:13", []string{"linux/amd64"}, []string{"base " + host + "/base/amd:13", "cannot be read", "check the reference"}},
		{"unreachable registry", "127.0.0.1:1/base/x:1", []string{"linux/amd64"}, []string{"base 127.0.0.1:1/base/x:1", "cannot be read"}},
		{"not an image", host + "/base/artifact@" + ad.DigestStr(), []string{"linux/amd64"}, []string{"base " + host + "/base/artifact@", "not an image config"}},
		{"no registry", "debian:12", []string{"linux/amd64"}, []string{"names no registry host"}},
		{"no tag or digest", host + "/base/amd", []string{"linux/amd64"}, []string{"neither a tag nor a digest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := filesImage()
			im.Platforms, im.Local.Base = tc.platforms, tc.base
			_, err := l.Build(ctx, request(repo, im))
			var be *BaseError
			if !errors.As(err, &be) {
				t.Fatalf("err %v, want a BaseError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\nlacks %q", err, w)
				}
			}
		})
	}
	pushes.Range(func(k, _ any) bool { t.Errorf("pushed before refusing: %v", k); return true })
}

// TestPerPlatformFiles: a file's source may name the platform, and a file may be limited to
// some platforms, so prebuilt per-architecture artifacts land in the right image.
func TestPerPlatformFiles(t *testing.T) {
	ctx := context.Background()
	l, _, repo := setup(t)
	dir := t.TempDir()
	for p, c := range map[string]string{"dist/relay_linux_amd64": "amd64 build", "dist/relay_linux_arm64": "arm64 build", "arm.txt": "arm only"} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), []byte(c), 0o755)
	}
	im := Image{Name: "relay", Platforms: []string{"linux/amd64", "linux/arm64"}, Local: &LocalSpec{Base: "scratch", Files: []File{
		{Src: "dist/relay_{{ .Os }}_{{ .Arch }}", Dst: "/usr/local/bin/relay", Mode: "0755"},
		{Src: "arm.txt", Dst: "/etc/arm.txt", Platforms: []string{"linux/arm64"}},
	}}}
	req := request(repo, im)
	req.ContextDir = dir
	res, err := l.Build(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Platforms {
		img, _ := remote.Image(repo.Digest(p.Digest))
		ls, _ := img.Layers()
		arch := strings.TrimPrefix(p.Platform, "linux/")
		if got := string(fileFromLayer(t, ls[0], "usr/local/bin/relay")); got != arch+" build" {
			t.Errorf("%s got the binary %q", p.Platform, got)
		}
		if _, has := listFiles(t, img)["etc/arm.txt"]; has != (arch == "arm64") {
			t.Errorf("%s: arm.txt present %v", p.Platform, has)
		}
	}
	// A platform whose artifact is missing fails, naming it.
	os.Remove(filepath.Join(dir, "dist/relay_linux_arm64"))
	if _, err := l.Build(ctx, req); err == nil || !strings.Contains(err.Error(), "linux/arm64") || !strings.Contains(err.Error(), "dist/relay_linux_arm64") {
		t.Fatalf("missing arm64 artifact: %v", err)
	}
}

// TestRegistryBaseAcrossRegistries: a base in another registry than the build's is copied
// blob by blob (streamed from one to the other), only where the build registry lacks it.
func TestRegistryBaseAcrossRegistries(t *testing.T) {
	ctx := context.Background()
	baseHost := testutil.Registry(t, true)
	baseRepo, _ := name.NewRepository(baseHost + "/library/debian")
	idx, _ := testutil.PushBase(t, baseRepo, "12", "linux/amd64", "linux/arm64")
	l, _, repo := setup(t) // another registry
	im := filesImage()
	im.Local.Base = baseHost + "/library/debian:12@" + idx.DigestStr()
	res, err := l.Build(ctx, request(repo, im))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Platforms {
		img, err := remote.Image(repo.Digest(p.Digest))
		if err != nil {
			t.Fatal(err)
		}
		if files := listFiles(t, img); files["var/lib/dpkg/status"] == 0 {
			t.Errorf("%s: the base's files did not reach the build registry: %v", p.Platform, files)
		}
	}
}

// TestGoBinaryCache: a rebuild of the same commit reuses the Go binary (same image digest,
// no `go build`), while another commit, other flags or a go.mod that replaces a module by a
// directory build again.
func TestGoBinaryCache(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go binary")
	}
	ctx := context.Background()
	c, _ := oci.New()
	cache := t.TempDir()
	l, err := NewLocal(LocalOptions{Client: c, ConfigDir: t.TempDir(), Jobs: 2, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(testutil.Registry(t, false) + "/build/tiny")
	checkout := t.TempDir()
	if out, err := exec.Command("git", "init", "-q", checkout).CombinedOutput(); err != nil { // a checkout: the commit names its files
		t.Fatalf("git init: %v\n%s", err, out)
	}
	ctxDir := filepath.Join(checkout, "svc")
	os.CopyFS(ctxDir, os.DirFS("testdata/ctx"))
	im := Image{Name: "tiny", Platforms: []string{"linux/amd64"}, Local: &LocalSpec{Base: "scratch", Go: &GoSpec{Main: "./cmd/tiny", Binary: "/tiny"}}}
	build := func(commit string, flags ...string) (*Result, bool) {
		t.Helper()
		req := request(repo, im)
		req.ContextDir, req.Source.Commit = ctxDir, commit
		req.Image.Local.Go.Flags = flags
		res, err := l.Build(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res, strings.Contains(string(res.Log), "built from commit")
	}
	first, cached := build("1111111111111111111111111111111111111111")
	if cached {
		t.Fatal("the first build came from the cache")
	}
	again, cached := build("1111111111111111111111111111111111111111")
	if !cached || again.Digest != first.Digest {
		t.Fatalf("rebuild of the same commit: cached %v, digest %s vs %s", cached, again.Digest, first.Digest)
	}
	if _, cached := build("2222222222222222222222222222222222222222"); cached {
		t.Error("another commit reused the binary")
	}
	if _, cached := build("1111111111111111111111111111111111111111", "-tags=x"); cached {
		t.Error("other flags reused the binary")
	}
	// A workspace at the checkout's root that replaces a module by a directory, above the context.
	os.WriteFile(filepath.Join(checkout, "go.work"), []byte("go 1.22\n\nuse ./svc\n\nreplace example.com/lib => ../lib\n"), 0o644)
	if _, cached := build("1111111111111111111111111111111111111111"); cached {
		t.Error("a go.work above the context replacing a module by a directory reused the binary")
	}
	os.Remove(filepath.Join(checkout, "go.work"))
	os.WriteFile(filepath.Join(ctxDir, "go.mod"), []byte("module example.com/tiny\n\ngo 1.22\n\nreplace example.com/lib => ../lib\n"), 0o644)
	if _, cached := build("1111111111111111111111111111111111111111"); cached {
		t.Error("a go.mod replacing a module by a directory reused the binary")
	}
}

func TestPruneCache(t *testing.T) {
	dir := t.TempDir()
	for i := range 5 {
		p := filepath.Join(dir, fmt.Sprintf("k%d", i))
		os.WriteFile(p, []byte("x"), 0o644)
		when := time.Date(2026, 1, 1, 0, i, 0, 0, time.UTC)
		os.Chtimes(p, when, when)
	}
	pruneCache(dir, 3)
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if strings.Join(left, ",") != "k2,k3,k4" {
		t.Fatalf("kept %v, want the three newest", left)
	}
}
