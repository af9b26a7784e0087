package steps

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"

	"github.com/relaydev/relay/pkg/release"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestReleaseFilesGolden: release.json, images.lock.json and the state of a two-platform,
// two-target release, as published and saved (the clock is fixed), against testdata (go test ./pkg/steps -run TestReleaseFilesGolden
// -update rewrites them). What differs between runs by nature is normalised: the registry's
// port, and the digests of signatures (ECDSA signs with a fresh nonce), which keep their
// subject and predicate type.
func TestReleaseFilesGolden(t *testing.T) {
	ctx := context.Background()
	env, _, out := pipelineEnv(t)
	st := checkedOut(t, "cid-golden")
	x := &Executor{Env: env, StatePath: filepath.Join(env.StateDir, "state.json")}
	if err := x.Run(ctx, All(), st); err != nil {
		t.Fatal(err)
	}
	host := regexp.MustCompile(`127\.0\.0\.1:\d+`)
	normalise := func(images []release.LockedImage) {
		for i := range images {
			r := images[i].Referrers
			for j := range r {
				r[j].Digest = "sha256:(signature-dependent)"
			}
			sort.SliceStable(r, func(a, b int) bool {
				if r[a].Subject != r[b].Subject {
					return r[a].Subject < r[b].Subject
				}
				return r[a].PredicateType < r[b].PredicateType
			})
		}
	}
	for _, tc := range []struct {
		file string
		doc  any
	}{
		{"release.json", &release.Manifest{}},
		{"images.lock.json", &release.Lock{}},
		{"state.json", &State{}},
	} {
		path := filepath.Join(out, tc.file)
		if tc.file == "state.json" {
			path = x.StatePath
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(host.ReplaceAllString(string(raw), "REGISTRY")), tc.doc); err != nil {
			t.Fatalf("%s does not parse as its type: %v", tc.file, err)
		}
		switch d := tc.doc.(type) {
		case *release.Manifest:
			normalise(d.Images)
		case *release.Lock:
			normalise(d.Images)
		case *State:
			d.Source.Dir, d.Release.URL = "(the checkout)", "file://(the release directory)"
			for _, atts := range [][]Attestation{d.Signatures, d.SBOMs, d.Provenance} {
				for i := range atts {
					atts[i].BundleDigest = "sha256:(signature-dependent)"
					for repo := range atts[i].Referrers {
						atts[i].Referrers[repo] = "sha256:(signature-dependent)"
					}
				}
			}
		}
		got, _ := json.MarshalIndent(tc.doc, "", "  ")
		got = append(got, '\n')
		golden := filepath.Join("testdata", tc.file+".golden")
		if *update {
			if err := os.WriteFile(golden, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (create it with: go test ./pkg/steps -run TestReleaseFilesGolden -update)", err)
		}
		if string(got) != string(want) {
			t.Errorf("%s differs from %s (if the change is meant, rerun with -update):\n%s", tc.file, golden, got)
		}
	}
}
