package oci

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// node is one manifest of a copy.
type node struct {
	digest string
	mt     types.MediaType
	raw    []byte
}

// graph is what copying one digest moves: every manifest below it, children before their
// parents, and every blob, each once.
type graph struct {
	nodes []node // the root last
	blobs []v1.Descriptor
	bytes int64
}

func (g *graph) root() node { return g.nodes[len(g.nodes)-1] }

// walk reads the manifests under src (nested indexes included) and lists their blobs.
func (c *Client) walk(ctx context.Context, src name.Digest) (*graph, error) {
	desc, err := c.get(ctx, src)
	if err != nil {
		return nil, err
	}
	return c.walkFrom(ctx, src, desc)
}

func (c *Client) walkFrom(ctx context.Context, src name.Digest, desc *remote.Descriptor) (*graph, error) {
	g := &graph{}
	seen := map[string]bool{}
	var visit func(ref string, mt types.MediaType, raw []byte) error
	visit = func(ref string, mt types.MediaType, raw []byte) error {
		switch {
		case mt.IsSchema1():
			return fmt.Errorf("%s is a Docker schema 1 manifest, which relay does not copy; push the image again with a current client", ref)
		case mt.IsIndex():
			im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
			if err != nil {
				return fmt.Errorf("parsing index %s: %w", ref, err)
			}
			for _, m := range im.Manifests {
				if seen[m.Digest.String()] {
					continue
				}
				seen[m.Digest.String()] = true
				child := src.Context().Digest(m.Digest.String())
				cd, err := c.get(ctx, child)
				if err != nil {
					return fmt.Errorf("reading %s, listed in index %s: %w", child, ref, err)
				}
				if err := visit(child.String(), cd.MediaType, cd.Manifest); err != nil {
					return err
				}
			}
		default:
			m, err := v1.ParseManifest(bytes.NewReader(raw))
			if err != nil {
				return fmt.Errorf("parsing manifest %s: %w", ref, err)
			}
			for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
				if !b.MediaType.IsDistributable() || seen[b.Digest.String()] {
					continue // foreign layers stay where their URLs point
				}
				seen[b.Digest.String()] = true
				g.blobs = append(g.blobs, b)
				g.bytes += b.Size
			}
		}
		h, _, err := v1.SHA256(bytes.NewReader(raw))
		if err != nil {
			return err
		}
		g.nodes = append(g.nodes, node{digest: h.String(), mt: mt, raw: raw})
		return nil
	}
	if err := visit(src.String(), desc.MediaType, desc.Manifest); err != nil {
		return nil, err
	}
	return g, nil
}

// shallow lists an image's manifest and the children its index names, without reading them.
func shallow(desc *remote.Descriptor) *graph {
	g := &graph{}
	if desc.MediaType.IsIndex() {
		if im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest)); err == nil {
			for _, m := range im.Manifests {
				g.nodes = append(g.nodes, node{digest: m.Digest.String(), mt: m.MediaType})
			}
		}
	}
	g.nodes = append(g.nodes, node{digest: desc.Digest.String(), mt: desc.MediaType, raw: desc.Manifest})
	return g
}

// Copy copies src (all platforms) by digest into dst, with the referrers and cosign's
// classic attachments of every manifest, and applies no tag. Blobs the destination has are
// skipped; children are written before the index that lists them.
func (c *Client) Copy(ctx context.Context, src name.Digest, dst name.Repository) (name.Digest, error) {
	out, err := c.CopyMulti(ctx, src, []name.Repository{dst})
	if err != nil {
		return name.Digest{}, err
	}
	return out[0], nil
}

// CopyMulti copies src into several repositories at once, reading each blob from the
// source once and streaming it to every destination that lacks it in parallel.
func (c *Client) CopyMulti(ctx context.Context, src name.Digest, dsts []name.Repository) ([]name.Digest, error) {
	start := c.now()
	desc, err := c.get(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("copying %s: reading source: %w", src, err)
	}
	root := desc.Digest.String()
	// What each destination holds and the source's referrers mode, asked side by side: on a
	// copy that finds everything in place these round trips are most of its time. (A
	// destination is probed once it holds the image: the probe needs the repository.)
	have := make([]bool, len(dsts))
	var wg sync.WaitGroup
	for i, dst := range dsts {
		wg.Go(func() { have[i], _ = c.Exists(ctx, dst.Digest(root)) })
	}
	wg.Go(func() { _, _ = c.ReferrersMode(ctx, src.Context()) }) // an error resurfaces in copyAttached
	wg.Wait()
	var need []name.Repository
	for i, dst := range dsts {
		if !have[i] {
			need = append(need, dst) // an error here resurfaces, with its cause, on the write
		}
	}
	var g *graph
	if len(need) > 0 {
		if g, err = c.walkFrom(ctx, src, desc); err != nil {
			return nil, fmt.Errorf("copying %s: reading source: %w", src, err)
		}
		if err := c.copyGraph(ctx, src.Context(), g, need); err != nil {
			return nil, fmt.Errorf("copying %s: %w", src, err)
		}
	} else {
		// Every destination has the image (children are written before their index), so
		// only the attachments can be missing: the index lists the digests to look at.
		g = shallow(desc)
	}
	if err := c.copyAttached(ctx, src.Context(), g, dsts); err != nil {
		return nil, err
	}
	out := make([]name.Digest, len(dsts))
	for i, dst := range dsts {
		out[i] = dst.Digest(root)
	}
	c.logger.Debug("copied", "image", src.String(), "destinations", len(dsts), "written", len(need), "duration_ms", c.now().Sub(start).Milliseconds())
	return out, nil
}

// copyGraph uploads the blobs, then writes the manifests children first, so no destination
// ever holds a manifest whose blobs or children are missing.
func (c *Client) copyGraph(ctx context.Context, src name.Repository, g *graph, dsts []name.Repository) error {
	prog := c.startProgress(src, g, len(dsts))
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(c.jobs)
	for _, b := range g.blobs {
		eg.Go(func() error { return c.copyBlob(ectx, src, b, dsts, prog) })
	}
	err := eg.Wait()
	prog.stop()
	if err != nil {
		return err
	}
	eg, ectx = errgroup.WithContext(ctx)
	for _, dst := range dsts {
		eg.Go(func() error {
			for _, n := range g.nodes {
				if err := remote.Put(dst.Digest(n.digest), rawManifest{raw: n.raw, mt: n.mt}, c.remote(ectx, dst, transport.PushScope)...); err != nil {
					return fmt.Errorf("writing manifest %s to %s: %w", n.digest, dst, err)
				}
			}
			return nil
		})
	}
	return eg.Wait()
}

// copyAttached copies what refers to each manifest of g (OCI referrers, then cosign's
// classic tags) to every destination; each attachment is itself a graph copy, so its own
// attachments follow, which ends because content addressing cannot make a cycle.
func (c *Client) copyAttached(ctx context.Context, src name.Repository, g *graph, dsts []name.Repository) error {
	eg, ectx := errgroup.WithContext(ctx)
	for _, repo := range append([]name.Repository{src}, dsts...) {
		eg.Go(func() error { _, err := c.ReferrersMode(ectx, repo); return err })
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	eg, ectx = errgroup.WithContext(ctx)
	eg.SetLimit(max(c.jobs, 8)) // small metadata requests: latency, not bandwidth, bounds them
	for _, n := range g.nodes {
		eg.Go(func() error {
			subject := src.Digest(n.digest)
			refs, err := c.Referrers(ectx, subject)
			if err != nil {
				return err
			}
			for _, r := range refs {
				if _, err := c.CopyMulti(ectx, src.Digest(r.Digest.String()), dsts); err != nil {
					return fmt.Errorf("copying referrer %s of %s: %w", r.Digest, subject, err)
				}
			}
			return c.copyClassicTags(ectx, src, dsts, n.digest)
		})
	}
	return eg.Wait()
}

// copyClassicTags copies cosign's classic signature, attestation and SBOM tags of digest.
// They are data about the digest, not release tags, so copying them is no commit point.
func (c *Client) copyClassicTags(ctx context.Context, src name.Repository, dsts []name.Repository, digest string) error {
	eg, ctx := errgroup.WithContext(ctx)
	for _, suf := range ClassicSuffixes {
		eg.Go(func() error {
			tag := ClassicTag(digest, suf)
			d, err := c.TagDigest(ctx, src.Tag(tag))
			if err != nil || d == "" {
				return err
			}
			var stale []name.Repository
			for _, dst := range dsts {
				if cur, err := c.TagDigest(ctx, dst.Tag(tag)); err != nil || cur != d {
					stale = append(stale, dst)
				}
			}
			if len(stale) == 0 {
				return nil
			}
			if _, err := c.CopyMulti(ctx, src.Digest(d), stale); err != nil {
				return fmt.Errorf("copying %s:%s: %w", src, tag, err)
			}
			for _, dst := range stale {
				if err := c.Tag(ctx, dst.Digest(d), tag); err != nil {
					return err
				}
				c.logger.Debug("copied cosign attachment", "image", dst.Tag(tag).String(), "digest", d)
			}
			return nil
		})
	}
	return eg.Wait()
}

// copyProgress counts the bytes and blobs of one graph copy and logs them every interval.
type copyProgress struct {
	logger     *slog.Logger
	image      string
	total      int64
	blobsTotal int
	bytes      atomic.Int64
	blobs      atomic.Int64
	stopOnce   sync.Once
	quit       chan struct{}
	done       chan struct{}
}

func (c *Client) startProgress(src name.Repository, g *graph, dsts int) *copyProgress {
	p := &copyProgress{logger: c.logger, image: src.String(), total: g.bytes * int64(dsts), blobsTotal: len(g.blobs) * dsts,
		quit: make(chan struct{}), done: make(chan struct{})}
	if c.every <= 0 {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(c.every)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				p.log()
			}
		}
	}()
	return p
}

func (p *copyProgress) addBytes(n int64) {
	if p != nil {
		p.bytes.Add(n)
	}
}

func (p *copyProgress) blobDone(n int) {
	if p != nil {
		p.blobs.Add(int64(n))
	}
}

func (p *copyProgress) log() {
	p.logger.Info("copy progress", "event", "copy.progress", "image", p.image,
		"bytes_done", p.bytes.Load(), "bytes_total", p.total, "blobs_done", p.blobs.Load(), "blobs_total", p.blobsTotal)
}

// stop ends the ticker and logs the final count once.
func (p *copyProgress) stop() {
	p.stopOnce.Do(func() {
		close(p.quit)
		<-p.done
		if p.blobsTotal > 0 {
			p.log()
		}
	})
}
