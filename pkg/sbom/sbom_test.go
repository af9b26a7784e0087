package sbom

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaydev/relay/internal/testutil"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// pushGoBinaryImage pushes an image holding the bundled example built by `go build`: a
// real Go binary whose build info lists its vendored dependency.
func pushGoBinaryImage(t *testing.T) name.Digest {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "hello")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", exe, ".")
	cmd.Dir = "../../examples/hello"
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the example: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg})
	tw.Write(bin)
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(testutil.Registry(t, false) + "/app")
	h, _ := img.Digest()
	ref := repo.Digest(h.String())
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestGenerateFromRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("catalogs a large binary")
	}
	ref := pushGoBinaryImage(t)
	g, err := New(Options{Version: relayVersionInTest})
	if err != nil {
		t.Fatal(err)
	}
	docs, err := g.Generate(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	var spdx struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			Name    string `json:"name"`
			Version string `json:"versionInfo"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(docs[FormatSPDX], &spdx); err != nil {
		t.Fatal(err)
	}
	var cdx struct {
		SpecVersion string `json:"specVersion"`
		Components  []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"components"`
	}
	if err := json.Unmarshal(docs[FormatCycloneDX], &cdx); err != nil {
		t.Fatal(err)
	}
	if spdx.SPDXVersion != "SPDX-2.3" || cdx.SpecVersion != "1.6" {
		t.Fatalf("versions %q %q", spdx.SPDXVersion, cdx.SpecVersion)
	}
	// relay made them, with syft inside; syft's vendor is neither their creator nor
	// relay's author.
	var meta struct {
		CreationInfo struct{ Creators []string } `json:"creationInfo"`
	}
	json.Unmarshal(docs[FormatSPDX], &meta)
	if c := meta.CreationInfo.Creators; len(c) != 2 || c[0] != "Tool: relay-"+relayVersionInTest || !strings.HasPrefix(c[1], "Tool: syft-") {
		t.Fatalf("SPDX creators %q", c)
	}
	var tools struct {
		Metadata struct {
			Tools struct {
				Components []struct{ Name, Author, Version string } `json:"components"`
			} `json:"tools"`
		} `json:"metadata"`
	}
	json.Unmarshal(docs[FormatCycloneDX], &tools)
	if c := tools.Metadata.Tools.Components; len(c) != 2 || c[0].Name != "relay" || c[0].Author != "" || c[1].Name != "syft" {
		t.Fatalf("CycloneDX tools %+v", c)
	}
	found := 0
	for _, p := range spdx.Packages {
		if p.Name == "golang.org/x/sync" && p.Version == "v0.24.0" {
			found++
		}
	}
	for _, c := range cdx.Components {
		if c.Name == "golang.org/x/sync" && c.Version == "v0.24.0" {
			found++
		}
	}
	if found != 2 {
		t.Fatalf("golang.org/x/sync v0.24.0 not listed in both formats: %+v", spdx.Packages[:min(8, len(spdx.Packages))])
	}

	// sbom.catalogers: leaving out the Go binary cataloger leaves the module out; a name
	// syft has no cataloger for is the configuration's error, named.
	without, _ := New(Options{Catalogers: []string{"-go-module-binary-cataloger"}, Formats: []string{FormatSPDX}})
	docs, err = without.Generate(context.Background(), ref)
	if err != nil || strings.Contains(string(docs[FormatSPDX]), "golang.org/x/sync") {
		t.Fatalf("without the Go binary cataloger: %v", err)
	}
	unknown, _ := New(Options{Catalogers: []string{"+no-such-cataloger"}, Formats: []string{FormatSPDX}})
	_, err = unknown.Generate(context.Background(), ref)
	var se *SelectionError
	if !errors.As(err, &se) || !se.PermanentInput() || !strings.Contains(err.Error(), "no-such-cataloger") || !strings.Contains(err.Error(), "sbom.catalogers") {
		t.Fatalf("unknown cataloger: %v", err)
	}

	small, _ := New(Options{Budget: 1024})
	_, err = small.Generate(context.Background(), ref)
	var tl *TooLargeError
	if !errors.As(err, &tl) || !strings.Contains(err.Error(), "catalogers") {
		t.Fatalf("over budget: %v", err)
	}
}

func TestOptions(t *testing.T) {
	if _, err := New(Options{Formats: []string{"spdx-tag"}}); err == nil {
		t.Error("unknown format accepted")
	}
	if _, err := New(Options{Budget: HardCap + 1}); err == nil {
		t.Error("budget over the hard cap accepted")
	}
}

const relayVersionInTest = "v1.2.3-test"

func TestSyftVersionIsGoMods(t *testing.T) {
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if want := "github.com/anchore/syft " + syftModuleVersion + "\n"; !strings.Contains(string(b), want) {
		t.Fatalf("go.mod does not require %q: update syftModuleVersion", strings.TrimSpace(want))
	}
}
