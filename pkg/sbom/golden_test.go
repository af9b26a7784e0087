package sbom

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"

	"github.com/relaydev/relay/pkg/oci"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// normalise replaces what differs between two catalogings of the same image by nature
// (creation times, document ids) or with the toolchain that built the example (the Go
// version, and the digests and ids that follow from the binary's bytes), so the golden
// file holds what relay's SBOMs say: packages, versions, PURLs, licenses, relationships.
func normalise(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			switch k {
			case "created", "timestamp":
				x[k] = "(time)"
			case "documentNamespace", "serialNumber":
				x[k] = "(unique)"
			default:
				x[k] = normalise(e)
			}
		}
		return x
	case []any:
		for i := range x {
			x[i] = normalise(x[i])
		}
		// Lists syft sorts by ids that held the registry's port: sorted again, normalised.
		sort.SliceStable(x, func(i, j int) bool {
			a, _ := json.Marshal(x[i])
			b, _ := json.Marshal(x[j])
			return string(a) < string(b)
		})
		return x
	case string:
		for _, r := range scrub {
			x = r.re.ReplaceAllString(x, r.with)
		}
		return x
	}
	return v
}

var scrub = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`go1\.\d+(\.\d+)?`), "(go version)"},
	{regexp.MustCompile(`[0-9a-f]{64}`), "(sha256)"},
	{regexp.MustCompile(`[0-9a-f]{40}`), "(sha1)"},
	{regexp.MustCompile(`[0-9a-f]{16}`), "(id)"},
	{regexp.MustCompile(`127\.0\.0\.1(:|-|%3A)\d+`), "REGISTRY"},
}

// TestSBOMGolden catalogs the example's image twice, through relay's registry client (as
// the pipeline does) and through syft's own, and checks both give the same normalised
// SPDX and CycloneDX documents, equal to testdata (go test ./pkg/sbom -run TestSBOMGolden
// -update rewrites them).
func TestSBOMGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("catalogs a large binary")
	}
	ref := pushGoBinaryImage(t)
	client, err := oci.New()
	if err != nil {
		t.Fatal(err)
	}
	viaRelay, _ := New(Options{Version: relayVersionInTest, Image: client.Image})
	viaSyft, _ := New(Options{Version: relayVersionInTest})
	var got [2]map[string][]byte
	for i, g := range []*Generator{viaRelay, viaSyft} {
		docs, err := g.Generate(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		got[i] = map[string][]byte{}
		for f, d := range docs {
			var v any
			if err := json.Unmarshal(d, &v); err != nil {
				t.Fatal(err)
			}
			got[i][f], _ = json.MarshalIndent(normalise(v), "", "  ")
			got[i][f] = append(got[i][f], '\n')
		}
	}
	for _, f := range []string{FormatSPDX, FormatCycloneDX} {
		if string(got[0][f]) != string(got[1][f]) {
			t.Errorf("%s: reading the image through relay's client changes the SBOM:\n%s\nvs syft's own read:\n%s", f, got[0][f], got[1][f])
		}
		golden := filepath.Join("testdata", f+".golden.json")
		if *update {
			os.MkdirAll("testdata", 0o755)
			if err := os.WriteFile(golden, got[0][f], 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (create it with: go test ./pkg/sbom -run TestSBOMGolden -update)", err)
		}
		if string(got[0][f]) != string(want) {
			t.Errorf("%s differs from %s (if the change is meant, rerun with -update):\n%s", f, golden, got[0][f])
		}
	}
}
