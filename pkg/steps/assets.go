package steps

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/relaydev/relay/internal/fsutil"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/config"
)

// ProjectAsset is one of the project's own files the release carries (release.assets).
type ProjectAsset struct {
	Name   string `json:"name"`
	Path   string `json:"path"` // relative to relay.yaml's directory
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Digest is the asset's digest as a subject names it.
func (a ProjectAsset) Digest() string { return "sha256:" + a.SHA256 }

// projectAssets finds the files release.assets names, by name, hashed.
func projectAssets(cfg *config.Config) ([]ProjectAsset, error) {
	files, err := assetFiles(cfg)
	if err != nil {
		return nil, err
	}
	for i, f := range files {
		if files[i].SHA256, files[i].Size, err = fsutil.SHA256File(cfg.ResolvePath(f.Path)); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// assetFiles finds the files release.assets names, by name, not yet hashed. A glob that
// matches nothing, a directory, two files of one name or a name relay's own files take is
// an input error naming the glob and the fix.
func assetFiles(cfg *config.Config) ([]ProjectAsset, error) {
	var out []ProjectAsset
	byName := map[string]string{}
	for i, g := range cfg.Release.Assets {
		matches, err := filepath.Glob(cfg.ResolvePath(g))
		if err != nil {
			return nil, &MissingInputError{Step: "release", Missing: []string{fmt.Sprintf("release.assets[%d] %q: %v", i, g, err)}}
		}
		if len(matches) == 0 {
			return nil, &MissingInputError{Step: "release", Missing: []string{fmt.Sprintf("the files of release.assets[%d] %q (none matches: build them before relay's release step, e.g. make dist)", i, g)}}
		}
		sort.Strings(matches)
		for _, m := range matches {
			fi, err := os.Stat(m)
			if err != nil {
				return nil, err
			}
			if !fi.Mode().IsRegular() {
				return nil, &assetError{fmt.Sprintf("release.assets[%d] %q matches %s, which is not a regular file: name files, e.g. `%s/*`", i, g, m, g)}
			}
			name := filepath.Base(m)
			rel, _ := filepath.Rel(cfg.Dir, m)
			switch {
			case slices.Contains(config.ReservedAssets, name) || strings.HasSuffix(name, ".sigstore.json"):
				return nil, &assetError{fmt.Sprintf("release.assets[%d] %q matches %s, whose name relay's own release files take (or its bundles, *.sigstore.json): rename it", i, g, rel)}
			case byName[name] != "":
				return nil, &assetError{fmt.Sprintf("release.assets: %s and %s have the same name %s, and a release holds one file of each name: rename one", byName[name], rel, name)}
			}
			byName[name] = rel
			out = append(out, ProjectAsset{Name: name, Path: rel})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// assetError is a release.assets file relay must refuse: a retry fails the same way.
type assetError struct{ msg string }

func (e *assetError) Error() string        { return e.msg }
func (e *assetError) PermanentInput() bool { return true }

// assetSubjects are the assets as provenance subjects.
func assetSubjects(assets []ProjectAsset) []attest.Subject {
	var out []attest.Subject
	for _, a := range assets {
		out = append(out, attest.Subject{Name: a.Name, Digest: a.Digest()})
	}
	return out
}

// sameAssets refuses to release files other than those the provenance named.
func sameAssets(named, now []ProjectAsset) error {
	if len(named) == 0 {
		return nil // the provenance step did not run, or provenance is off
	}
	was := map[string]string{}
	for _, a := range named {
		was[a.Name] = a.SHA256
	}
	for _, a := range now {
		switch sum, ok := was[a.Name]; {
		case !ok:
			return &assetError{fmt.Sprintf("release.assets: %s appeared after the provenance named the release's files: re-run from the provenance step (relay provenance, then relay release)", a.Path)}
		case sum != a.SHA256:
			return &assetError{fmt.Sprintf("release.assets: %s changed since the provenance named it (sha256 %s, now %s): rebuild nothing between the steps, or re-run relay provenance", a.Path, sum[:12], a.SHA256[:12])}
		}
		delete(was, a.Name)
	}
	for name := range was {
		return &assetError{fmt.Sprintf("release.assets: %s, which the provenance names, is gone: rebuild it or re-run relay provenance", name)}
	}
	return nil
}
