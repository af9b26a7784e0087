//go:build integration

// End-to-end tests of `relay run --local` on the bundled example: the real binary (this
// test binary re-executed as relay), the real local builder and `go build`, syft, the
// sandbox registry, and independent verifiers (sigstore-go, the SPDX and CycloneDX Go
// libraries) reading what relay wrote. Run with `make test-integration`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"
	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/release"
	"github.com/relaydev/relay/pkg/steps"
)

func TestMain(m *testing.M) {
	testutil.MaybeFakeRunner()
	if os.Getenv("RELAY_E2E_EXEC") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// exampleCopy copies examples/hello into a fresh directory, without local state.
func exampleCopy(t testing.TB) string {
	t.Helper()
	src, _ := filepath.Abs("../../examples/hello")
	dst := filepath.Join(t.TempDir(), "hello")
	copyTree(t, src, dst, ".relay", "dist")
	return dst
}

// exampleWith is exampleCopy with one edit of its relay.yaml (old must be there).
func exampleWith(t testing.TB, old, new string) string {
	t.Helper()
	dir := exampleCopy(t)
	cfg, _ := os.ReadFile(filepath.Join(dir, "relay.yaml"))
	edited := strings.Replace(string(cfg), old, new, 1)
	if edited == string(cfg) {
		t.Fatalf("the example's relay.yaml no longer has %q", old)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyTree copies the regular files and directories of src to dst, leaving out the
// directories named in skip (state, builds, .git).
func copyTree(t testing.TB, src, dst string, skip ...string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		switch {
		case d.IsDir() && rel != "." && slices.Contains(skip, d.Name()):
			return filepath.SkipDir
		case slices.Contains(skip, d.Name()): // a worktree's .git is a file naming the real one
			return nil
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		case !d.Type().IsRegular():
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, _ := d.Info()
		return os.WriteFile(filepath.Join(dst, rel), b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// commitAndTag makes dir a git repository with one commit of everything, at a fixed time,
// tagged tag.
func commitAndTag(t testing.TB, dir, tag string) {
	t.Helper()
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "test"}, {"tag", tag}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t",
			"GIT_COMMITTER_EMAIL=t@example.com", "GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
}

// spdxPackages reads an SPDX document of dist: its packages' versions by name.
func spdxPackages(t *testing.T, path string) (map[string]string, *spdx.Document) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := spdxjson.Read(f)
	f.Close()
	if err != nil {
		t.Fatalf("SPDX %s does not parse: %v", filepath.Base(path), err)
	}
	got := map[string]string{}
	for _, p := range doc.Packages {
		got[p.PackageName] = p.PackageVersion
	}
	return got, doc
}

func relayCmd(ctx context.Context, dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Args[0] = "relay"
	cmd.Dir = dir
	// GITHUB_ACTIONS= keeps the logs JSON (parseLogs) when the suite itself runs in Actions.
	cmd.Env = append(os.Environ(), "RELAY_E2E_EXEC=1", "RELAY_CORRELATION_ID=e2e-run", "GITHUB_ACTIONS=")
	return cmd
}

type result struct {
	code   int
	stdout string
	stderr string
	logs   []map[string]any
}

func runRelay(t testing.TB, dir string, args ...string) result {
	t.Helper()
	return runRelayEnv(t, dir, nil, args...)
}

// parseLogs checks every log line is a JSON object with a correlation_id.
func parseLogs(t testing.TB, stderr string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if strings.HasPrefix(line, "relay: ") {
			break // the final outcome, last, and it may span lines
		}
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q\n%s", line, stderr)
		}
		if rec["correlation_id"] != "e2e-run" {
			t.Fatalf("log line without the correlation id: %q", line)
		}
		if r, _ := rec["runner"].(map[string]any); r == nil || r["name"] == "" {
			t.Fatalf("log line without runner.name: %q", line)
		}
		recs = append(recs, rec)
	}
	return recs
}

func TestE2ELocalReleaseOfExample(t *testing.T) {
	dir := exampleCopy(t)
	r := runRelay(t, dir, "run", "--local")
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "relay: released v0.1.0") || !strings.Contains(r.stdout, "linux/amd64, linux/arm64") || !strings.Contains(r.stdout, "invocation: e2e-run (") {
		t.Fatalf("summary:\n%s", r.stdout)
	}
	dist := filepath.Join(dir, "dist")
	lock := readLock(t, dist)
	if len(lock.Images) != 1 || len(lock.Images[0].Platforms) != 2 {
		t.Fatalf("lock: %+v", lock)
	}
	im := lock.Images[0]
	pushed := []string{im.Digest, im.Platforms[0].Digest, im.Platforms[1].Digest}

	checkSHA256SUMS(t, dist)
	checkSBOMs(t, dist)
	verified := checkBundles(t, dist, pushed)
	if verified != 3+4+1 {
		t.Fatalf("%d bundles verified, want 8 (3 signatures, 4 SBOMs, 1 provenance)", verified)
	}
	images, _ := os.ReadFile(filepath.Join(dist, "images.txt"))
	if strings.TrimSpace(string(images)) != im.Reference {
		t.Fatalf("images.txt %q, want %q", images, im.Reference)
	}

	// Everything in the pin file resolves in the registry the run left behind.
	refs := referrers(t, dir, lock)
	if len(refs) != len(im.Referrers) || len(refs) != 8 {
		t.Fatalf("registry holds %d referrers, lock lists %d, want 8", len(refs), len(im.Referrers))
	}

	// Again from scratch: same digests, no duplicate referrers, nothing rewritten.
	r2 := runRelay(t, dir, "run", "--local", "--restart")
	if r2.code != 0 {
		t.Fatalf("second run exit %d:\n%s", r2.code, r2.stderr)
	}
	lock2 := readLock(t, dist)
	if lock2.Images[0].Digest != im.Digest || lock2.Images[0].Platforms[1].Digest != im.Platforms[1].Digest {
		t.Fatalf("not reproducible: %s vs %s", im.Digest, lock2.Images[0].Digest)
	}
	if refs2 := referrers(t, dir, lock2); strings.Join(refs2, ",") != strings.Join(refs, ",") {
		t.Fatalf("second run changed the referrers:\n%v\n%v", refs, refs2)
	}
	reused := 0
	for _, rec := range r2.logs {
		if rec["msg"] == "attached" && rec["reused"] == true {
			reused++
		}
	}
	if reused != 8 {
		t.Fatalf("second run reused %d attestations, want 8", reused)
	}

	// The same files in a folder of another name, elsewhere, build the same images.
	other := filepath.Join(t.TempDir(), "renamed", "my-service")
	copyTree(t, filepath.Join("..", "..", "examples", "hello"), other, ".relay", "dist")
	if r3 := runRelay(t, other, "run", "--local"); r3.code != 0 {
		t.Fatalf("run in a renamed copy: exit %d:\n%s", r3.code, r3.stderr)
	}
	lock3 := readLock(t, filepath.Join(other, "dist"))
	if lock3.Commit != lock.Commit || lock3.Images[0].Digest != im.Digest || lock3.Images[0].Platforms[0].Digest != im.Platforms[0].Digest {
		t.Fatalf("a renamed copy gave other digests: commit %s vs %s, index %s vs %s", lock3.Commit, lock.Commit, lock3.Images[0].Digest, im.Digest)
	}
}

func TestE2ESIGTERMDuringSBOMResumes(t *testing.T) {
	dir := exampleCopy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := relayCmd(ctx, dir, "run", "--local")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	signalled := false
	var rest bytes.Buffer
	for sc.Scan() {
		line := sc.Text()
		if signalled {
			rest.WriteString(line + "\n")
			continue
		}
		var rec map[string]any
		json.Unmarshal([]byte(line), &rec)
		if rec["step"] == "sbom" && rec["event"] == "step.started" {
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			signalled = true
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !signalled || !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("signalled %v, exit %v; after the signal:\n%s", signalled, err, rest.String())
	}
	st, err := steps.LoadState(filepath.Join(dir, ".relay", "state.json"))
	if err != nil || st == nil {
		t.Fatalf("no state after SIGTERM: %v", err)
	}
	if !st.Done("sign") || st.Done("sbom") || st.Done("release") {
		t.Fatalf("state after SIGTERM: %+v", st.Completed)
	}
	if _, err := os.Stat(filepath.Join(dir, "dist", "images.lock.json")); !os.IsNotExist(err) {
		t.Fatal("an interrupted run published a pin file")
	}

	r := runRelay(t, dir, "run", "--local")
	if r.code != 0 {
		t.Fatalf("resume exit %d:\n%s", r.code, r.stderr)
	}
	var skipped, started []string
	for _, rec := range r.logs {
		switch rec["event"] {
		case "step.skipped":
			skipped = append(skipped, rec["step"].(string))
		case "step.started":
			started = append(started, rec["step"].(string))
		}
	}
	if strings.Join(skipped, ",") != "checkout,build,copy,sign" || strings.Join(started, ",") != "sbom,provenance,verify,release" {
		t.Fatalf("resume skipped %v and ran %v", skipped, started)
	}
}

func readLock(t *testing.T, dist string) release.Lock {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dist, "images.lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	var l release.Lock
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func checkSHA256SUMS(t *testing.T, dist string) {
	ctx := context.Background()
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	ents, _ := os.ReadDir(dist)
	if len(lines) != len(ents)-2 {
		t.Fatalf("SHA256SUMS lists %d files, dist has %d besides it and its signature", len(lines), len(ents)-2)
	}
	// SHA256SUMS.sigstore.json signs SHA256SUMS, as an in-toto statement about its digest.
	sig, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS.sigstore.json"))
	if err != nil {
		t.Fatal(err)
	}
	pub, hint, err := attest.LoadPublicKey(filepath.Join(dist, "relay-signing.pub"))
	if err != nil {
		t.Fatal(err)
	}
	tm, _ := attest.TrustedKey(pub, hint)
	v, _ := attest.NewKeyVerifier(tm)
	sum := sha256.Sum256(b)
	if _, err := v.VerifyStatement(ctx, sig, "sha256:"+hex.EncodeToString(sum[:]), attest.PredicateSign); err != nil {
		t.Fatalf("SHA256SUMS.sigstore.json: %v", err)
	}
	for _, l := range lines {
		sum, file, ok := strings.Cut(l, "  ")
		if !ok {
			t.Fatalf("bad SHA256SUMS line %q", l)
		}
		data, err := os.ReadFile(filepath.Join(dist, file))
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != sum {
			t.Fatalf("%s: checksum mismatch", file)
		}
	}
}

func checkSBOMs(t *testing.T, dist string) {
	t.Helper()
	want := map[string]string{"example.com/hello": "v0.1.0", "golang.org/x/sync": "v0.24.0"}
	for _, plat := range []string{"linux-amd64", "linux-arm64"} {
		got, doc := spdxPackages(t, filepath.Join(dist, "hello_"+plat+".spdx.json"))
		if doc.SPDXVersion != "SPDX-2.3" {
			t.Fatalf("SPDX version %q", doc.SPDXVersion)
		}
		// relay made it, with syft inside: both named with versions, no vendor as creator.
		var creators []string
		for _, c := range doc.CreationInfo.Creators {
			creators = append(creators, c.CreatorType+": "+c.Creator)
		}
		if len(creators) != 2 || !strings.HasPrefix(creators[0], "Tool: relay-") || !strings.HasPrefix(creators[1], "Tool: syft-v1.") {
			t.Errorf("SPDX %s creators %q", plat, creators)
		}
		for m, v := range want {
			if got[m] != v {
				t.Errorf("SPDX %s: %s has version %q, want %q", plat, m, got[m], v)
			}
		}

		f, err := os.Open(filepath.Join(dist, "hello_"+plat+".cdx.json"))
		if err != nil {
			t.Fatal(err)
		}
		var bom cdx.BOM
		err = cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom)
		f.Close()
		if err != nil {
			t.Fatalf("CycloneDX %s does not parse: %v", plat, err)
		}
		if bom.SpecVersion != cdx.SpecVersion1_6 {
			t.Fatalf("CycloneDX spec %v", bom.SpecVersion)
		}
		got = map[string]string{}
		for _, c := range *bom.Components {
			got[c.Name] = c.Version
		}
		for m, v := range want {
			if got[m] != v {
				t.Errorf("CycloneDX %s: %s has version %q, want %q", plat, m, got[m], v)
			}
		}
	}
}

// checkBundles verifies every bundle in dist with sigstore-go directly, against the
// published public key, and checks the provenance subjects are the pushed digests.
func checkBundles(t *testing.T, dist string, pushed []string) int {
	t.Helper()
	pub, hint, err := attest.LoadPublicKey(filepath.Join(dist, "relay-signing.pub"))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := attest.TrustedKey(pub, hint)
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	if err != nil {
		t.Fatal(err)
	}
	paths, _ := filepath.Glob(filepath.Join(dist, "*.sigstore.json"))
	n := 0
	for _, p := range paths {
		if filepath.Base(p) == "SHA256SUMS.sigstore.json" {
			continue // about the release's files, not an image: checkSHA256SUMS verifies it
		}
		b, err := bundle.LoadJSONFromPath(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		res, err := v.Verify(b, verify.NewPolicy(verify.WithoutArtifactUnsafe(), verify.WithKey()))
		if err != nil {
			t.Fatalf("%s does not verify: %v", filepath.Base(p), err)
		}
		var subjects []string
		for _, s := range res.Statement.Subject {
			subjects = append(subjects, "sha256:"+s.Digest["sha256"])
		}
		for _, s := range subjects {
			if !slices.Contains(pushed, s) {
				t.Fatalf("%s: subject %s was not pushed", filepath.Base(p), s)
			}
		}
		if res.Statement.PredicateType == attest.PredicateSLSA {
			a, b := append([]string(nil), subjects...), append([]string(nil), pushed...)
			sort.Strings(a)
			sort.Strings(b)
			if strings.Join(a, ",") != strings.Join(b, ",") {
				t.Fatalf("provenance subjects %v, pushed %v", a, b)
			}
			pred := res.Statement.Predicate.AsMap()
			inv := pred["runDetails"].(map[string]any)["metadata"].(map[string]any)["invocationId"]
			if inv != "e2e-run" {
				t.Fatalf("provenance invocationId %v", inv)
			}
		}
		n++
	}
	return n
}

// referrers resolves every pin-file digest in the sandbox registry the run left on disk
// and returns the sorted referrer digests found there.
func referrers(t *testing.T, dir string, lock release.Lock) []string {
	t.Helper()
	ctx := context.Background()
	sb, err := oci.StartSandbox(ctx, filepath.Join(dir, ".relay", "local", "registry"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	c, _ := oci.New()
	var out []string
	for _, im := range lock.Images {
		d, err := name.NewDigest(im.Reference)
		if err != nil {
			t.Fatal(err)
		}
		all := []string{im.Digest}
		for _, p := range im.Platforms {
			all = append(all, p.Digest)
		}
		for _, dg := range all {
			ref := d.Context().Digest(dg)
			if ok, err := c.Exists(ctx, ref); !ok || err != nil {
				t.Fatalf("%s does not resolve: %v", ref, err)
			}
			rs, err := c.Referrers(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				out = append(out, r.Digest.String())
			}
		}
		for _, tag := range im.Tags {
			if got, _ := c.TagDigest(ctx, d.Context().Tag(tag)); got != im.Digest {
				t.Fatalf("tag %s points at %q, want %s", tag, got, im.Digest)
			}
		}
		for _, r := range im.Referrers {
			if ok, _ := c.Exists(ctx, d.Context().Digest(r.Digest)); !ok {
				t.Fatalf("referrer %s in the pin file does not resolve", r.Digest)
			}
		}
	}
	sort.Strings(out)
	return out
}
