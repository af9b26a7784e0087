//go:build integration

package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/attest"
)

// TestE2EReleaseOnRegistryBase releases the example on a Debian-like base pulled from a
// registry: the provenance names the base's digest per platform, and each platform's SBOM
// lists the base's dpkg packages beside the example's Go modules.
func TestE2EReleaseOnRegistryBase(t *testing.T) {
	reg := testutil.Registry(t, true)
	baseRepo, _ := name.NewRepository(reg + "/library/debian")
	idx, per := testutil.PushBase(t, baseRepo, "12", "linux/amd64", "linux/arm64")
	dir := realExample(t, reg, "signing: {mode: key, key: "+testKeyFile(t)+", tlog: false}\n")
	// relay.yaml says scratch; --base builds on the registry base instead.
	base := reg + "/library/debian:12@" + idx.DigestStr()
	r := runRelay(t, dir, "run", "--base", "hello="+base)
	if r.code != 0 {
		t.Fatalf("release on a registry base: exit %d\n%s", r.code, r.stderr)
	}
	dist := filepath.Join(dir, "dist")
	// --local reads the base from its registry too (reads are allowed; writes stay in
	// the sandbox), so a newcomer's first command works on a real base.
	if l := runRelayEnv(t, dir, []string{"RELAY_BASE=hello=" + base}, "run", "--local", "--out", t.TempDir(), "--state", filepath.Join(t.TempDir(), "state.json")); l.code != 0 {
		t.Fatalf("--local on a registry base: exit %d\n%s", l.code, l.stderr)
	}

	// The provenance: one resolved dependency per platform's base, pullable by its URI.
	paths, _ := filepath.Glob(filepath.Join(dist, "*.sigstore.json"))
	var deps []any
	for _, p := range paths {
		var b struct {
			DSSE struct{ Payload string } `json:"dsseEnvelope"`
		}
		raw, _ := os.ReadFile(p)
		json.Unmarshal(raw, &b)
		payload, _ := base64.StdEncoding.DecodeString(b.DSSE.Payload)
		var st struct {
			PredicateType string
			Predicate     struct {
				BuildDefinition struct {
					ResolvedDependencies []any
				}
			}
		}
		json.Unmarshal(payload, &st)
		if st.PredicateType == attest.PredicateSLSA {
			deps = st.Predicate.BuildDefinition.ResolvedDependencies
		}
	}
	got := map[string]string{}
	for _, d := range deps {
		m := d.(map[string]any)
		if m["name"] == "base-image" {
			got[m["annotations"].(map[string]any)["platform"].(string)] = m["uri"].(string)
		}
	}
	for p, d := range per {
		if want := reg + "/library/debian:12@" + d; got[p] != want {
			t.Errorf("provenance base for %s: %q, want %q (all: %v)", p, got[p], want, deps)
		}
	}

	// The SBOMs: the base's Debian packages and the example's Go modules.
	for _, plat := range []string{"linux-amd64", "linux-arm64"} {
		pkgs, _ := spdxPackages(t, filepath.Join(dist, "hello_"+plat+".spdx.json"))
		for n, v := range map[string]string{"base-files": "12.4+deb12u5", "ca-certificates": "20230311", "example.com/hello": "v0.1.0"} {
			if pkgs[n] != v {
				t.Errorf("SBOM %s: %s has version %q, want %q", plat, n, pkgs[n], v)
			}
		}
	}
}
