//go:build integration

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaydev/relay/internal/testutil"
)

// TestE2EReleaseAssets: the project's own files (release.assets) are released with a blob
// bundle each, which cosign v2 and v3 verify-blob --bundle and relay verify-blob accept,
// and which refuses another file.
func TestE2EReleaseAssets(t *testing.T) {
	dir := exampleWith(t, "\nrelease:\n", "\nrelease:\n  assets: [\"bin/hello-*\", CHANGELOG.md]\n")
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	files := map[string]string{"bin/hello-linux-amd64": "\x7fELF amd64", "bin/hello-linux-arm64": "\x7fELF arm64", "CHANGELOG.md": "# v0.1.0\n"}
	for p, b := range files {
		os.WriteFile(filepath.Join(dir, p), []byte(b), 0o755)
	}
	if r := runRelay(t, dir, "run", "--local"); r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	dist := filepath.Join(dir, "dist")
	checkSHA256SUMS(t, dist)
	sums, _ := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	cosign := testutil.Tool(t, "cosign", "see .ci/run")
	cosign3 := testutil.Tool(t, "cosign3", "see .ci/run")
	home := t.TempDir()
	// The key is the trust: an empty trusted root keeps cosign away from the public TUF repository.
	emptyRoot := filepath.Join(home, "trusted_root.json")
	os.WriteFile(emptyRoot, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644)
	pub := filepath.Join(dist, "relay-signing.pub")
	for p := range files {
		name := filepath.Base(p)
		if !strings.Contains(string(sums), "  "+name+"\n") || !strings.Contains(string(sums), "  "+name+".sigstore.json\n") {
			t.Errorf("SHA256SUMS lacks %s or its bundle", name)
		}
		file, bundle := filepath.Join(dist, name), filepath.Join(dist, name+".sigstore.json")
		for _, args := range [][]string{
			{cosign, "verify-blob", "--new-bundle-format", "--trusted-root", emptyRoot},
			{cosign3, "verify-blob", "--trusted-root", emptyRoot},
		} {
			cmd := exec.Command(args[0], append(args[1:], "--bundle", bundle, "--key", pub, "--insecure-ignore-tlog=true", file)...)
			cmd.Env = append(os.Environ(), "HOME="+home)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s %s: %v\n%s", filepath.Base(args[0]), name, err, out)
			}
		}
		if r := runRelay(t, dist, "verify-blob", name, "--key", pub); r.code != 0 || !strings.Contains(r.stdout, name+": verified") {
			t.Errorf("relay verify-blob %s: exit %d\n%s%s", name, r.code, r.stdout, r.stderr)
		}
	}
	// A bundle vouches for its own file only.
	other := filepath.Join(dist, "hello-linux-amd64.sigstore.json")
	cmd := exec.Command(cosign3, "verify-blob", "--trusted-root", emptyRoot, "--bundle", other, "--key", pub, "--insecure-ignore-tlog=true", filepath.Join(dist, "CHANGELOG.md"))
	cmd.Env = append(os.Environ(), "HOME="+home)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("cosign v3 accepted another file's bundle:\n%s", out)
	}
	if r := runRelay(t, dist, "verify-blob", "CHANGELOG.md", "--bundle", other, "--key", pub); r.code != exitStepFailed {
		t.Fatalf("relay verify-blob of another file's bundle: exit %d\n%s", r.code, r.stderr)
	}
}
