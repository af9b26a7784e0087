package oci

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
)

// CopyMulti copies src into several repositories at once, reading each blob from the
// source once and streaming it to every destination that lacks it in parallel. Manifests
// and referrers then follow through Copy, which finds every blob already present. A blob
// whose shared stream fails is copied again to each destination on its own.
func (c *Client) CopyMulti(ctx context.Context, src name.Digest, dsts []name.Repository) ([]name.Digest, error) {
	if len(dsts) == 1 {
		d, err := c.Copy(ctx, src, dsts[0])
		return []name.Digest{d}, err
	}
	start := time.Now()
	blobs, err := c.blobsOf(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("copying %s: %w", src, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.jobs)
	for _, b := range blobs {
		g.Go(func() error { return c.fanOut(gctx, b, dsts) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]name.Digest, len(dsts))
	g, gctx = errgroup.WithContext(ctx)
	for i, dst := range dsts {
		g.Go(func() error {
			d, err := c.Copy(gctx, src, dst)
			out[i] = d
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	c.logger.Debug("copied to several destinations", "image", src.String(), "destinations", len(dsts), "duration_ms", time.Since(start).Milliseconds())
	return out, nil
}

// blobsOf lists the config and layers of every image under src, each once.
func (c *Client) blobsOf(ctx context.Context, src name.Digest) ([]v1.Layer, error) {
	desc, err := c.get(ctx, src)
	if err != nil {
		return nil, err
	}
	var imgs []v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, m := range im.Manifests {
			if !m.MediaType.IsImage() {
				continue // nested indexes and artifacts go through Copy
			}
			img, err := idx.Image(m.Digest)
			if err != nil {
				return nil, err
			}
			imgs = append(imgs, img)
		}
	} else if desc.MediaType.IsImage() {
		img, err := desc.Image()
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	seen := map[v1.Hash]bool{}
	var out []v1.Layer
	for _, img := range imgs {
		cfg, err := partial.ConfigLayer(img)
		if err != nil {
			return nil, err
		}
		ls, err := img.Layers()
		if err != nil {
			return nil, err
		}
		for _, l := range append([]v1.Layer{cfg}, ls...) {
			h, err := l.Digest()
			if err != nil {
				return nil, err
			}
			if mt, err := l.MediaType(); err == nil && !mt.IsDistributable() {
				continue
			}
			if !seen[h] {
				seen[h] = true
				out = append(out, l)
			}
		}
	}
	return out, nil
}

// fanOut streams one source blob to every destination that lacks it.
func (c *Client) fanOut(ctx context.Context, l v1.Layer, dsts []name.Repository) error {
	h, _ := l.Digest()
	var missing []name.Repository
	for _, d := range dsts {
		if ok, _ := c.blobExists(ctx, d, h); !ok {
			missing = append(missing, d)
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return c.writeLayer(ctx, missing[0], l)
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	pipes := make([]*io.PipeWriter, len(missing))
	writers := make([]io.Writer, len(missing))
	g, gctx := errgroup.WithContext(ctx)
	for i, d := range missing {
		pr, pw := io.Pipe()
		pipes[i], writers[i] = pw, pw
		g.Go(func() error {
			err := c.writeLayer(gctx, d, &teeLayer{Layer: l, r: pr})
			pr.CloseWithError(err) // unblock the copier if this destination gave up
			return err
		})
	}
	_, cerr := io.Copy(io.MultiWriter(writers...), rc)
	for _, pw := range pipes {
		pw.CloseWithError(cerr)
	}
	if err := g.Wait(); err != nil || cerr != nil {
		// The shared stream broke: give each destination its own read of the source.
		c.logger.Warn("shared blob stream failed, copying it to each destination on its own", "digest", h.String(), "error", firstErr(err, cerr))
		for _, d := range missing {
			if err := c.writeLayer(ctx, d, l); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Client) writeLayer(ctx context.Context, dst name.Repository, l v1.Layer) error {
	if err := remote.WriteLayer(dst, l, c.remote(ctx)...); err != nil {
		h, _ := l.Digest()
		return fmt.Errorf("uploading blob %s to %s: %w", h, dst, err)
	}
	return nil
}

func (c *Client) blobExists(ctx context.Context, repo name.Repository, h v1.Hash) (bool, error) {
	l, err := remote.Layer(repo.Digest(h.String()), c.remote(ctx)...)
	if err != nil {
		return false, err
	}
	// remote.Layer is lazy: Size issues the HEAD.
	if _, err := l.Size(); err != nil {
		return false, nil
	}
	return true, nil
}

// teeLayer is a source layer whose bytes come from a shared stream, readable once.
type teeLayer struct {
	v1.Layer
	r    io.ReadCloser
	once sync.Once
}

func (t *teeLayer) Compressed() (io.ReadCloser, error) {
	var rc io.ReadCloser = io.NopCloser(errReader{fmt.Errorf("shared blob stream already consumed")})
	t.once.Do(func() { rc = t.r })
	return rc, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
