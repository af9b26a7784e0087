package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// CopyPlatforms copies only some platforms of the index src into dst. The platform
// manifests keep their digests and referrers; the index is a new one listing just them, so
// its digest differs from src's, and signatures of the original index do not apply to it.
// Every child is copied before the index, so dst never holds an index with missing children.
func (c *Client) CopyPlatforms(ctx context.Context, src name.Digest, dst name.Repository, platforms []v1.Platform) (name.Digest, error) {
	desc, err := c.get(ctx, src)
	if err != nil {
		return name.Digest{}, fmt.Errorf("copying %s to %s: reading source: %w", src, dst, err)
	}
	if !desc.MediaType.IsIndex() {
		return name.Digest{}, fmt.Errorf("copying %s: a platform subset needs an index, and this is a single image (%s)", src, desc.MediaType)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return name.Digest{}, fmt.Errorf("parsing index %s: %w", src, err)
	}
	var keep []v1.Descriptor
	var have []string
	for _, want := range platforms {
		found := false
		for _, m := range im.Manifests {
			if m.Platform != nil && m.Platform.Satisfies(want) {
				keep = append(keep, m)
				found = true
				break
			}
		}
		if !found {
			for _, m := range im.Manifests {
				if m.Platform != nil {
					have = append(have, m.Platform.String())
				}
			}
			return name.Digest{}, fmt.Errorf("copying %s: it has no %s image (it has %s)", src, want.String(), strings.Join(have, ", "))
		}
	}
	for _, m := range keep {
		if _, err := c.Copy(ctx, src.Context().Digest(m.Digest.String()), dst); err != nil {
			return name.Digest{}, err
		}
	}
	sub := *im
	sub.Manifests = keep
	raw, err := json.Marshal(sub)
	if err != nil {
		return name.Digest{}, err
	}
	h, _, _ := v1.SHA256(bytes.NewReader(raw))
	out := dst.Digest(h.String())
	if err := remote.Put(out, rawManifest{raw: raw, mt: desc.MediaType}, c.remote(ctx, dst, transport.PushScope)...); err != nil {
		return name.Digest{}, fmt.Errorf("writing the %d-platform index to %s: %w", len(keep), dst, err)
	}
	c.logger.Info("copied a platform subset", "image", out.String(), "source", src.String(), "platforms", len(keep))
	return out, nil
}
