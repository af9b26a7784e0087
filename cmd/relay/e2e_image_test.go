//go:build integration

package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/steps"
)

// TestE2EBuildsRelaysOwnImages builds relay.yaml (the root one, relay's own) as it is, on stand-in bases given
// through --base (the documented override: no test reaches ghcr.io or gcr.io): the runner
// image runs relay runner as user 1001 from /home/runner, each platform has a relay built
// for it, and the amd64 image's relay answers `relay runner --help`.
func TestE2EBuildsRelaysOwnImages(t *testing.T) {
	root, _ := filepath.Abs("../..")
	// The repository's files as one commit of a fresh git repository: a CI checkout may be
	// shallow, detached or not git at all, and the build must not depend on which.
	src := snapshotRepo(t, root)
	reg := testutil.Registry(t, true)
	runnerRepo, _ := name.NewRepository(reg + "/stand-in/actions-runner")
	runnerIdx, _ := testutil.PushBase(t, runnerRepo, "2.337.0", "linux/amd64", "linux/arm64")
	staticRepo, _ := name.NewRepository(reg + "/stand-in/static")
	staticIdx, _ := testutil.PushBase(t, staticRepo, "nonroot", "linux/amd64", "linux/arm64")

	// The file as shipped, with the test's build registry and the repository's absolute path.
	raw, err := os.ReadFile(filepath.Join(root, "relay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(raw), "registry: ghcr.io/relaydev/build", "registry: "+reg+"/build", 1)
	cfg = regexp.MustCompile(`(?m)^  repo: \..*$`).ReplaceAllString(cfg, "  repo: "+src)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relay.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	state := filepath.Join(dir, "state.json")
	// relay cross-compiled twice, cold on a fresh CI machine and beside the other packages'
	// tests: minutes, not the five a hanging run gets.
	r := runRelayFor(t, 20*time.Minute, dir, nil, "run", "--config", cfgPath, "--state", state, "--only", "checkout,build", "--ref", "v0.0.0-image-test",
		"--base", "relay-runner="+reg+"/stand-in/actions-runner:2.337.0@"+runnerIdx.DigestStr(),
		"--base", "relay="+reg+"/stand-in/static:nonroot@"+staticIdx.DigestStr())
	if r.code != 0 {
		t.Fatalf("building relay.yaml: exit %d\n%s", r.code, r.stderr)
	}
	st, err := steps.LoadState(state)
	if err != nil {
		t.Fatal(err)
	}
	machine := map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64}
	for _, want := range []struct {
		image, user, workdir, entrypoint string
	}{
		{"relay-runner", "1001", "/home/runner", "/usr/local/bin/relay runner"},
		{"relay", "65532:65532", "/home/runner", "/usr/local/bin/relay"}, // the stand-in's workdir: relay.yaml sets none
	} {
		b := st.Build(want.image)
		if b == nil || len(b.Platforms) != 2 || len(b.Bases) != 2 {
			t.Fatalf("%s: build %+v", want.image, b)
		}
		repo, _ := name.NewRepository(strings.SplitN(b.Ref, "@", 2)[0])
		for _, p := range b.Platforms {
			img, err := remote.Image(repo.Digest(p.Digest))
			if err != nil {
				t.Fatal(err)
			}
			cf, _ := img.ConfigFile()
			if cf.Config.User != want.user || cf.Config.WorkingDir != want.workdir || strings.Join(cf.Config.Entrypoint, " ") != want.entrypoint {
				t.Errorf("%s %s: user %q workdir %q entrypoint %q", want.image, p.Platform, cf.Config.User, cf.Config.WorkingDir, cf.Config.Entrypoint)
			}
			bin := imageFile(t, img, "usr/local/bin/relay")
			f, err := elf.NewFile(bytes.NewReader(bin))
			if err != nil || f.Machine != machine[p.Platform] {
				t.Fatalf("%s %s: relay is %v (%v), want %v", want.image, p.Platform, f.Machine, err, machine[p.Platform])
			}
			if want.image == "relay-runner" && p.Platform == "linux/amd64" {
				exe := filepath.Join(t.TempDir(), "relay")
				os.WriteFile(exe, bin, 0o755)
				out, err := exec.Command(exe, "runner", "--help").CombinedOutput()
				if err != nil || !strings.Contains(string(out), "relay runner") {
					t.Errorf("relay runner --help from the amd64 image: %v\n%s", err, out)
				}
			}
		}
	}
}

// snapshotRepo copies the repository's source (not .git, state, builds) into a new git
// repository with one commit, tagged v0.0.0-image-test.
func snapshotRepo(t *testing.T, root string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "relay")
	copyTree(t, root, dst, ".git", ".relay", "bin", "dist")
	commitAndTag(t, dst, "v0.0.0-image-test")
	return dst
}

// imageFile reads path from the image's layers, the topmost copy winning.
func imageFile(t *testing.T, img v1.Image, path string) []byte {
	t.Helper()
	ls, _ := img.Layers()
	var found []byte
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if strings.TrimPrefix(h.Name, "/") == path {
				found, _ = io.ReadAll(tr)
			}
		}
		rc.Close()
	}
	if found == nil {
		t.Fatalf("%s is in no layer", path)
	}
	return found
}
