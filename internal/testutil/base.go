package testutil

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DpkgStatus is a Debian package database listing two packages, for the SBOM to find.
const DpkgStatus = `Package: base-files
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 341
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: ARCH
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files

Package: ca-certificates
Status: install ok installed
Priority: optional
Section: misc
Installed-Size: 384
Maintainer: Julien Cristau <jcristau@debian.org>
Architecture: all
Version: 20230311
Description: Common CA certificates

`

// tarLayerOf is a layer holding files (path -> content).
func tarLayerOf(t testing.TB, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range []string{"etc/passwd", "var/lib/dpkg/status", "home/runner/run.sh"} {
		c, ok := files[p]
		if !ok {
			continue
		}
		tw.WriteHeader(&tar.Header{Name: p, Mode: 0o755, Size: int64(len(c)), Typeflag: tar.TypeReg})
		tw.Write([]byte(c))
	}
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// PushBase makes a Debian-like base image for the platforms (a dpkg database listing
// base-files and ca-certificates, a user runner 1001 with /home/runner/run.sh, env, a
// workdir, an entrypoint, a label, a port), pushes its index to repo (a plain-HTTP test
// registry) tagged tag, and returns the index's digest and each platform's manifest digest.
func PushBase(t testing.TB, repo name.Repository, tag string, platforms ...string) (name.Digest, map[string]string) {
	t.Helper()
	return PushBaseWith(t, repo, tag, nil, platforms...)
}

// PushBaseWith is PushBase to a registry that needs options (TLS, credentials).
func PushBaseWith(t testing.TB, repo name.Repository, tag string, opts []remote.Option, platforms ...string) (name.Digest, map[string]string) {
	t.Helper()
	var adds []mutate.IndexAddendum
	digests := map[string]string{}
	for _, ps := range platforms {
		p, _ := v1.ParsePlatform(ps)
		img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: tarLayerOf(t, map[string]string{
			"etc/passwd":          "root:x:0:0::/root:/bin/sh\nrunner:x:1001:1001::/home/runner:/bin/sh\n",
			"var/lib/dpkg/status": strings.ReplaceAll(DpkgStatus, "ARCH", p.Architecture),
			"home/runner/run.sh":  "#!/bin/sh\n",
		}), MediaType: types.OCILayer})
		if err != nil {
			t.Fatal(err)
		}
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		cf.Config = v1.Config{User: "1001", WorkingDir: "/home/runner", Env: []string{"PATH=/usr/bin:/bin", "RUNNER_MANUALLY_TRAP_SIG=1"},
			Entrypoint: []string{"/home/runner/run.sh"}, Labels: map[string]string{"org.opencontainers.image.vendor": "base"}, ExposedPorts: map[string]struct{}{"9000/tcp": {}}}
		img, _ = mutate.ConfigFile(img, cf)
		d, _ := img.Digest()
		digests[p.String()] = d.String()
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	ref, err := name.NewTag(repo.String()+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	return ref.Context().Digest(d.String()), digests
}
