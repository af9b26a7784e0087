package build

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Base is a registry base image one platform of a build was made on.
type Base struct {
	Name     string `json:"name"`     // as configured, REGISTRY/REPO[:TAG] (no digest)
	Digest   string `json:"digest"`   // the platform manifest's
	Index    string `json:"index"`    // what the reference resolved to (an index or the manifest)
	Platform string `json:"platform"` // the build's platform
}

// BaseError is a base that cannot serve the build: named, with the fix, before any push.
type BaseError struct {
	Base, Msg, Fix string
}

func (e *BaseError) Error() string {
	return fmt.Sprintf("base %s: %s (fix: %s)", e.Base, e.Msg, e.Fix)
}

// PermanentInput: the same base fails the same way on a retry (exit 2).
func (e *BaseError) PermanentInput() bool { return true }

// IsRegistryBase says whether a local.base names a registry image rather than scratch or
// an OCI layout.
func IsRegistryBase(spec string) bool {
	return spec != "scratch" && !strings.HasPrefix(spec, "oci-layout:")
}

// ParseRegistryBase checks a registry base reference: an explicit registry host, and a tag
// or digest (a bare repository would silently mean :latest on Docker Hub).
func ParseRegistryBase(spec string) (name.Reference, error) {
	first, _, ok := strings.Cut(spec, "/")
	if !ok || !(strings.ContainsAny(first, ".:") || first == "localhost") {
		return nil, fmt.Errorf("%q names no registry host: write REGISTRY/REPO[:TAG]@sha256:… (e.g. ghcr.io/actions/actions-runner:2.330.0@sha256:…), `scratch` or `oci-layout:PATH`", spec)
	}
	repo := spec
	if i := strings.Index(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if !strings.Contains(repo[strings.LastIndex(repo, "/")+1:], ":") && !strings.Contains(spec, "@") {
		return nil, fmt.Errorf("%q has neither a tag nor a digest: pin it as REGISTRY/REPO:TAG@sha256:…", spec)
	}
	ref, err := name.ParseReference(spec, name.StrictValidation)
	if err != nil {
		// name rejects TAG@DIGEST together; keep the digest, which is what pins.
		if tagged, dg, ok := strings.Cut(spec, "@"); ok {
			t, terr := name.NewTag(tagged, name.StrictValidation)
			if terr != nil {
				return nil, fmt.Errorf("%q: %w", spec, terr)
			}
			return name.NewDigest(t.Context().String()+"@"+dg, name.StrictValidation)
		}
		return nil, fmt.Errorf("%q: %w", spec, err)
	}
	return ref, nil
}

// baseName is what the annotations and provenance call a base: the reference without its digest.
func baseName(spec string) string {
	n, _, _ := strings.Cut(spec, "@")
	return n
}

// resolvedBase is a build's base, resolved once for all its platforms.
type resolvedBase struct {
	spec  string
	image func(ctx context.Context, p v1.Platform) (v1.Image, *Base, error)
}

// resolveBase reads what the base is (for a registry base: its manifest or index, never a
// layer) and checks that it has every platform wanted, before anything is built or pushed.
func (l *Local) resolveBase(ctx context.Context, spec string, want []v1.Platform) (*resolvedBase, error) {
	switch {
	case spec == "scratch":
		img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		return &resolvedBase{spec: spec, image: func(context.Context, v1.Platform) (v1.Image, *Base, error) { return img, nil, nil }}, nil
	case strings.HasPrefix(spec, "oci-layout:"):
		p := strings.TrimPrefix(spec, "oci-layout:")
		if !filepath.IsAbs(p) {
			p = filepath.Join(l.o.ConfigDir, p)
		}
		idx, err := layout.ImageIndexFromPath(p)
		if err != nil {
			return nil, fmt.Errorf("reading OCI layout %s: %w (fix: point local.base at a directory with oci-layout and index.json)", p, err)
		}
		return &resolvedBase{spec: spec, image: func(_ context.Context, plat v1.Platform) (v1.Image, *Base, error) {
			img, d, err := pickPlatform(idx, plat, p)
			if err != nil {
				return nil, nil, err
			}
			return img, &Base{Digest: d, Platform: plat.String()}, nil
		}}, nil
	}
	ref, err := ParseRegistryBase(spec)
	if err != nil {
		return nil, &BaseError{Base: spec, Msg: err.Error(), Fix: "correct images[].local.base"}
	}
	res, err := l.o.Client.Resolve(ctx, ref)
	if err != nil {
		return nil, &BaseError{Base: spec, Msg: "cannot be read: " + err.Error(), Fix: "check the reference, that the registry answers, and the credentials to pull it (docs/config.md, Registries)"}
	}
	if !types.MediaType(res.MediaType).IsIndex() && !types.MediaType(res.MediaType).IsImage() {
		return nil, &BaseError{Base: spec, Msg: "is a " + res.MediaType + ", not an image or an index", Fix: "name an image"}
	}
	if _, isDigest := ref.(name.Digest); !isDigest {
		l.o.Logger.Info("base resolved", "base", spec, "digest", res.Digest, "hint", "pin it: "+baseName(spec)+"@"+res.Digest)
	} else if res.Digest != ref.Identifier() {
		return nil, &BaseError{Base: spec, Msg: "the registry served " + res.Digest, Fix: "the registry is not serving what the digest names: check it"}
	}
	repo := ref.Context()
	var have []string
	for _, m := range res.Manifests {
		have = append(have, m.Platform)
	}
	pick := func(plat v1.Platform) (string, error) {
		if !types.MediaType(res.MediaType).IsIndex() && len(want) > 1 {
			return "", &BaseError{Base: spec, Msg: fmt.Sprintf("is a single-platform image (%s), and the build has %d platforms", have[0], len(want)),
				Fix: "use the base's multi-platform index, or build one platform"}
		}
		for _, m := range res.Manifests {
			if p, err := v1.ParsePlatform(m.Platform); err == nil && samePlatform(*p, plat) {
				return m.Digest, nil
			}
		}
		if !types.MediaType(res.MediaType).IsIndex() && have[0] == "" {
			return res.Digest, nil // a config without os/architecture: trust the build's platform
		}
		return "", &BaseError{Base: spec, Msg: fmt.Sprintf("has no image for %s; it has %s", plat.String(), strings.Join(have, ", ")),
			Fix: "build only the platforms the base has, or choose a base that has " + plat.String()}
	}
	for _, p := range want {
		if _, err := pick(p); err != nil {
			return nil, err
		}
	}
	return &resolvedBase{spec: spec, image: func(ctx context.Context, plat v1.Platform) (v1.Image, *Base, error) {
		d, err := pick(plat)
		if err != nil {
			return nil, nil, err
		}
		img, err := l.o.Client.Image(ctx, repo.Digest(d)) // manifests and config only; layers stay remote
		if err != nil {
			return nil, nil, &BaseError{Base: spec, Msg: err.Error(), Fix: "check that the registry answers"}
		}
		m, err := img.Manifest()
		if err == nil && m.Config.MediaType != types.OCIConfigJSON && m.Config.MediaType != types.DockerConfigJSON {
			err = fmt.Errorf("its config is a %s", m.Config.MediaType)
		}
		if err == nil {
			var cf *v1.ConfigFile
			if cf, err = img.ConfigFile(); err == nil && len(cf.RootFS.DiffIDs) != len(m.Layers) {
				err = fmt.Errorf("it lists %d layers and its config %d diff ids", len(m.Layers), len(cf.RootFS.DiffIDs))
			}
		}
		if err != nil {
			return nil, nil, &BaseError{Base: spec, Msg: fmt.Sprintf("the %s image's config is not an image config: %v", plat.String(), err), Fix: "name a container image, not another artifact"}
		}
		return img, &Base{Name: baseName(spec), Digest: d, Index: res.Digest, Platform: plat.String()}, nil
	}}, nil
}

// samePlatform matches a base's platform to a build's, variant-aware: arm64 is arm64/v8,
// and a build that names no variant takes the base's.
func samePlatform(have, want v1.Platform) bool {
	norm := func(p v1.Platform) v1.Platform {
		if p.Architecture == "arm64" && p.Variant == "" {
			p.Variant = "v8"
		}
		return p
	}
	h, w := norm(have), norm(want)
	if h.OS != w.OS || h.Architecture != w.Architecture {
		return false
	}
	return want.Variant == "" || h.Variant == w.Variant
}

func pickPlatform(idx v1.ImageIndex, plat v1.Platform, where string) (v1.Image, string, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	var have []string
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, "", err
			}
			if img, dg, err := pickPlatform(child, plat, where); err == nil {
				return img, dg, nil
			}
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, "", err
			}
			p := d.Platform
			if p == nil {
				cf, err := img.ConfigFile()
				if err != nil {
					return nil, "", err
				}
				p = cf.Platform()
			}
			if p != nil {
				have = append(have, p.String())
				if samePlatform(*p, plat) {
					return img, d.Digest.String(), nil
				}
			}
		}
	}
	slices.Sort(have)
	return nil, "", fmt.Errorf("%s has no image for %s (it has %s)", where, plat.String(), strings.Join(slices.Compact(have), ", "))
}
