// Command benchimg pushes seeded, generated images for `make bench`: layers of pseudo-random
// bytes streamed from a seed (never held in memory), so a 1 GiB image costs no disk and the
// same seed always gives the same digests.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	ref := flag.String("ref", "", "repository:tag to push to")
	platforms := flag.Int("platforms", 1, "platforms (more than one gives an index)")
	layers := flag.Int("layers", 12, "layers per platform")
	size := flag.Int64("size", 1<<30, "bytes per platform")
	seed := flag.Uint64("seed", 1, "seed of the content")
	flag.Parse()
	if err := run(*ref, *platforms, *layers, *size, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "benchimg:", err)
		os.Exit(1)
	}
}

func run(ref string, platforms, layers int, size int64, seed uint64) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	archs := []string{"amd64", "arm64", "ppc64le", "s390x", "riscv64", "386"}
	var adds []mutate.IndexAddendum
	var single v1.Image
	for p := 0; p < platforms; p++ {
		img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		for l := 0; l < layers; l++ {
			img, err = mutate.AppendLayers(img, newLayer(seed*1000+uint64(p*100+l), size/int64(layers)))
			if err != nil {
				return err
			}
		}
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", archs[p%len(archs)]
		img, err = mutate.ConfigFile(img, cf)
		if err != nil {
			return err
		}
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		single = img
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: cf.Architecture}}})
	}
	if platforms == 1 {
		err = remote.Write(tag, single, remote.WithJobs(4))
	} else {
		err = remote.WriteIndex(tag, mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex), remote.WithJobs(4))
	}
	if err != nil {
		return err
	}
	d, err := remote.Head(tag)
	if err != nil {
		return err
	}
	fmt.Println(tag.Context().Digest(d.Digest.String()).String())
	return nil
}

// layer is an uncompressed layer of n pseudo-random bytes regenerated from its seed.
type layer struct {
	seed uint64
	n    int64
	h    v1.Hash
}

func newLayer(seed uint64, n int64) *layer {
	l := &layer{seed: seed, n: n}
	hw := sha256.New()
	io.Copy(hw, l.reader())
	l.h = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", hw.Sum(nil))}
	return l
}

func (l *layer) reader() io.Reader {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i] = byte(l.seed >> (8 * i))
	}
	return io.LimitReader(rand.NewChaCha8(s), l.n)
}

func (l *layer) Digest() (v1.Hash, error)            { return l.h, nil }
func (l *layer) DiffID() (v1.Hash, error)            { return l.h, nil }
func (l *layer) Size() (int64, error)                { return l.n, nil }
func (l *layer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }
func (l *layer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(l.reader()), nil
}
func (l *layer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
