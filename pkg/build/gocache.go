package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/relaydev/relay/internal/fsutil"
)

// A Go binary is a function of the commit's tree, where in it the main package is, the
// toolchain, the GO* environment and the flags (-trimpath keeps paths out of it; module
// versions are pinned by go.sum, which is in the tree). A rebuild of the same commit
// reuses the binary instead of paying `go build`'s ~0.4 s even on a full build cache.

// localReplace is a replace directive to a directory, whose content no commit pins.
var localReplace = regexp.MustCompile(`(?m)=>\s*(\.{1,2}/|/)`)

// binaryKey is the cache key of a binary, or "" when it cannot be trusted to identify
// one: no commit, no cache, a go.mod or go.work that replaces a module by a directory, or a
// context outside a git checkout.
func (l *Local) binaryKey(ctx context.Context, req Request, plat v1.Platform, ldflags, args []string) string {
	if l.o.CacheDir == "" || req.Source.Commit == "" {
		return ""
	}
	root := req.ContextDir
	for {
		if _, err := os.Stat(filepath.Join(root, ".git")); err == nil {
			break
		}
		up := filepath.Dir(root)
		if up == root {
			return "" // not in a checkout: the commit does not name these files
		}
		root = up
	}
	rel, err := filepath.Rel(root, req.ContextDir)
	if err != nil {
		return ""
	}
	// The module (and a workspace) may be anywhere from the context up to the checkout's root.
	for dir := req.ContextDir; ; dir = filepath.Dir(dir) {
		for _, f := range []string{"go.mod", "go.work"} {
			if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil && localReplace.Match(b) {
				return ""
			}
		}
		if dir == root {
			break
		}
	}
	env, err := l.goEnv(ctx)
	if err != nil {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "commit %s\ncontext %s\nplatform %s\n%s\n", req.Source.Commit, filepath.ToSlash(rel), plat.String(), env)
	for _, kv := range l.o.Env { // what the build inherits that changes its output
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "GO") || strings.HasPrefix(k, "CGO_") {
			fmt.Fprintf(h, "env %s\n", kv)
		}
	}
	fmt.Fprintf(h, "ldflags %q\nargs %q\n", ldflags, args)
	return hex.EncodeToString(h.Sum(nil))
}

// goEnv is the toolchain's version and the settings that change its output, asked once.
func (l *Local) goEnv(ctx context.Context) (string, error) {
	l.envOnce.Do(func() {
		cmd := exec.CommandContext(ctx, l.o.GoBinary, "env", "GOVERSION", "GOFLAGS", "GOEXPERIMENT", "GOAMD64", "GOARM64", "GOTOOLCHAIN")
		cmd.Env = l.o.Env
		out, err := cmd.Output()
		if err != nil {
			l.envErr = err
			return
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") // empty values are empty lines
		if len(lines) != 6 {
			l.envErr = fmt.Errorf("go env: %d lines, want 6", len(lines))
			return
		}
		l.env = strings.Join(lines, "\n")
	})
	return l.env, l.envErr
}

// cachedBinary copies the cached binary for key to out; false when there is none.
func (l *Local) cachedBinary(key, out string) bool {
	if key == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join(l.o.CacheDir, key))
	return err == nil && os.MkdirAll(filepath.Dir(out), 0o755) == nil && os.WriteFile(out, b, 0o755) == nil
}

// keepBinary stores out under key, atomically: a half-written entry is never read.
func (l *Local) keepBinary(key, out string) {
	if key == "" {
		return
	}
	if b, err := os.ReadFile(out); err == nil && fsutil.WriteFileAtomic(filepath.Join(l.o.CacheDir, key), b, 0o755) == nil {
		pruneCache(l.o.CacheDir, maxCachedBinaries)
	}
}

// maxCachedBinaries bounds the cache on a long-lived machine: a few commits' worth of
// binaries per image and platform (an ephemeral runner never gets near it).
const maxCachedBinaries = 32

// pruneCache removes the oldest entries beyond keep.
func pruneCache(dir string, keep int) {
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) <= keep {
		return
	}
	type aged struct {
		name string
		mod  int64
	}
	var all []aged
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && !strings.Contains(e.Name(), ".tmp") {
			all = append(all, aged{e.Name(), fi.ModTime().UnixNano()})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mod > all[j].mod })
	for _, a := range all[min(keep, len(all)):] {
		os.Remove(filepath.Join(dir, a.name))
	}
}
