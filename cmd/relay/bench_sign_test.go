//go:build integration

package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/relaydev/relay/internal/testutil"
)

// BenchmarkSignChain compares relay's sign, sbom, provenance and verify steps with the
// chain a release engineer scripts by hand (syft, cosign sign, cosign attest, cosign verify,
// cosign verify-attestation) on the same 4-platform image (~200 MiB per platform plus the
// example's Go binary) and the local Sigstore stack: Fulcio, Rekor v2, the TSA. Both sides
// produce the same artifacts: a keyless signature on the index and on every platform
// manifest, SPDX and CycloneDX SBOM attestations per platform, SLSA provenance on the
// index, and then verify all of them. The chain gets its provenance predicate for free.
//
// It needs the stack's binaries and a syft CLI (scripts/bench-tools.sh) and a private
// network namespace; `make bench` runs it through scripts/bench-sign.sh.
func BenchmarkSignChain(b *testing.B) {
	if os.Getenv("RELAY_TEST_NETNS") != "1" {
		b.Skip("needs a private network namespace: run it with scripts/bench-sign.sh (make bench)")
	}
	syft := testutil.Tool(b, "syft", "scripts/bench-tools.sh builds it")
	st := testutil.StartSigstore(b)
	reg := testutil.Registry(b, true)
	base := filepath.Join(b.TempDir(), "base")
	writeBaseLayout(b, base, 4, 200<<20)

	dir := realExample(b, reg, fmt.Sprintf("signing:\n  mode: keyless\n  trusted_root: %s\n  signing_config: %s\n", st.TrustedRoot, st.SigningConfig))
	cfgPath := filepath.Join(dir, "relay.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	cfg = bytes.Replace(cfg, []byte("platforms: [linux/amd64, linux/arm64]"), []byte("platforms: [linux/amd64, linux/arm64, linux/ppc64le, linux/s390x]"), 1)
	cfg = bytes.Replace(cfg, []byte("base: scratch"), []byte("base: oci-layout:"+base), 1)
	const identity = "release@example.com"
	predicate := filepath.Join(b.TempDir(), "provenance.json")
	os.WriteFile(predicate, []byte(`{"buildDefinition":{"buildType":"https://example.com/chain/v1","externalParameters":{}},"runDetails":{"builder":{"id":"https://example.com/chain"}}}`), 0o644)

	var relayWall, chainWall []time.Duration
	var relayRSS, chainRSS int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// A new target repository each round, so neither side finds the other's (or its
		// own earlier) signatures to reuse.
		round := bytes.Replace(cfg, []byte(reg+"/acme/hello]"), []byte(fmt.Sprintf("%s/acme/hello-%d]", reg, i)), 1)
		os.WriteFile(cfgPath, round, 0o644)
		os.RemoveAll(filepath.Join(dir, ".relay"))
		if r := runRelayEnv(b, dir, nil, "run", "--only", "checkout,build,copy"); r.code != 0 {
			b.Fatalf("relay build and copy: exit %d\n%s", r.code, r.stderr)
		}
		env := []string{"SIGSTORE_ID_TOKEN=" + st.OIDC.Token(b, identity)}
		b.StartTimer()

		t0 := time.Now()
		cmd := relayCmd(context.Background(), dir, "run", "--only", "sign,sbom,provenance,verify")
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("relay sign, sbom, provenance, verify: %v\n%s", err, tail(out))
		}
		if p := os.Getenv("RELAY_BENCH_LOG"); p != "" { // where the time went, step by step
			os.WriteFile(p, out, 0o644)
		}
		relayWall = append(relayWall, time.Since(t0))
		relayRSS = max(relayRSS, maxRSS(cmd))

		b.StopTimer()
		index, platforms := builtImage(b, dir)
		chainRepo := fmt.Sprintf("%s/chain/hello-%d", reg, i)
		if r := runRelayEnv(b, dir, nil, "copy", index, chainRepo); r.code != 0 {
			b.Fatalf("relay copy for the chain: exit %d\n%s", r.code, r.stderr)
		}
		b.StartTimer()

		t0 = time.Now()
		rss := runChain(b, st, syft, chainRepo, index, platforms, predicate, identity)
		chainWall = append(chainWall, time.Since(t0))
		chainRSS = max(chainRSS, rss)
	}
	rw, cw := median(relayWall), median(chainWall)
	b.ReportMetric(rw.Seconds(), "relay-s")
	b.ReportMetric(cw.Seconds(), "chain-s")
	b.ReportMetric(rw.Seconds()/cw.Seconds(), "ratio")
	b.ReportMetric(float64(relayRSS)/1024, "relay-MiB")
	b.ReportMetric(float64(chainRSS)/1024, "chain-MiB")
}

// runChain is the hand-written equivalent of relay's four steps; it returns the peak RSS
// (KiB) of its largest process.
func runChain(b *testing.B, st *testutil.Sigstore, syft, repo, index string, platforms []string, predicate, identity string) int64 {
	b.Helper()
	home, work := b.TempDir(), b.TempDir()
	var peak int64
	run := func(bin string, args ...string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "HOME="+home, "SYFT_REGISTRY_INSECURE_USE_HTTP=true", "SYFT_CHECK_FOR_APP_UPDATE=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, tail(out))
		}
		peak = max(peak, maxRSS(cmd))
	}
	token := st.OIDC.Token(b, identity)
	signing := []string{"--yes", "--allow-insecure-registry", "--new-bundle-format", "--signing-config", st.SigningConfig,
		"--trusted-root", st.TrustedRoot, "--identity-token", token}
	verifying := []string{"--allow-insecure-registry", "--new-bundle-format", "--trusted-root", st.TrustedRoot, "--use-signed-timestamps",
		"--insecure-ignore-sct", "--certificate-identity", identity, "--certificate-oidc-issuer", st.OIDC.URL}
	idx := repo + "@" + index[strings.LastIndex(index, "@")+1:]
	var plats []string
	for _, p := range platforms {
		plats = append(plats, repo+"@"+p)
	}

	run(st.Cosign, append(append([]string{"sign", "--recursive"}, signing...), idx)...)
	for i, p := range plats {
		spdx, cdx := filepath.Join(work, fmt.Sprintf("%d.spdx.json", i)), filepath.Join(work, fmt.Sprintf("%d.cdx.json", i))
		run(syft, "scan", "registry:"+p, "-q", "-o", "spdx-json="+spdx, "-o", "cyclonedx-json="+cdx)
		run(st.Cosign, append(append([]string{"attest", "--type", "spdxjson", "--predicate", spdx}, signing...), p)...)
		run(st.Cosign, append(append([]string{"attest", "--type", "cyclonedx", "--predicate", cdx}, signing...), p)...)
	}
	run(st.Cosign, append(append([]string{"attest", "--type", "slsaprovenance1", "--predicate", predicate}, signing...), idx)...)
	run(st.Cosign, append(append([]string{"verify"}, verifying...), append([]string{idx}, plats...)...)...)
	run(st.Cosign, append(append([]string{"verify-attestation", "--type", "slsaprovenance1"}, verifying...), idx)...)
	run(st.Cosign, append(append([]string{"verify-attestation", "--type", "spdxjson"}, verifying...), plats...)...)
	run(st.Cosign, append(append([]string{"verify-attestation", "--type", "cyclonedx"}, verifying...), plats...)...)
	return peak
}

// builtImage reads the index (repository@digest) and platform digests the copy step recorded.
func builtImage(b *testing.B, dir string) (string, []string) {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, ".relay", "state.json"))
	if err != nil {
		b.Fatal(err)
	}
	var st struct {
		Copies []struct {
			Repository string `json:"repository"`
			Digest     string `json:"digest"`
			Platforms  []struct {
				Digest string `json:"digest"`
			} `json:"platforms"`
		} `json:"copies"`
	}
	if err := json.Unmarshal(raw, &st); err != nil || len(st.Copies) != 1 || len(st.Copies[0].Platforms) != 4 {
		b.Fatalf("state after copy: %v\n%s", err, raw)
	}
	c := st.Copies[0]
	var ps []string
	for _, p := range c.Platforms {
		ps = append(ps, p.Digest)
	}
	return c.Repository + "@" + c.Digest, ps
}

// writeBaseLayout writes an OCI layout with an index of n platforms, each with two
// uncompressed layers holding one file of seeded pseudo-random bytes: size bytes a platform.
func writeBaseLayout(b *testing.B, dir string, n int, size int) {
	b.Helper()
	archs := []string{"amd64", "arm64", "ppc64le", "s390x"}
	rng := rand.New(rand.NewPCG(1, 2))
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for p := 0; p < n; p++ {
		img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		for l := 0; l < 2; l++ {
			data := make([]byte, size/2)
			for i := 0; i+8 <= len(data); i += 8 {
				v := rng.Uint64()
				for k := 0; k < 8; k++ {
					data[i+k] = byte(v >> (8 * k))
				}
			}
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("opt/data/%d.bin", l), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
			tw.Write(data)
			tw.Close()
			var err error
			if img, err = mutate.AppendLayers(img, static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer)); err != nil {
				b.Fatal(err)
			}
		}
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", archs[p]
		img, err := mutate.ConfigFile(img, cf)
		if err != nil {
			b.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: archs[p]}}})
	}
	if _, err := layout.Write(dir, idx); err != nil {
		b.Fatal(err)
	}
}

func maxRSS(cmd *exec.Cmd) int64 {
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return 0
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func tail(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}
