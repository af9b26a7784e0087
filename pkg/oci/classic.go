package oci

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// cosign's classic signature format: an image tagged sha256-<hex>.sig whose layers are
// simple-signing payloads, each with its signature in an annotation.
const (
	SimpleSigningMediaType    = "application/vnd.dev.cosign.simplesigning.v1+json"
	AnnotationCosignSignature = "dev.cosignproject.cosign/signature"
	// Keyless classic signatures: the Fulcio certificate, its chain, and the Rekor v1 entry.
	AnnotationCosignCertificate = "dev.sigstore.cosign/certificate"
	AnnotationCosignChain       = "dev.sigstore.cosign/chain"
	AnnotationCosignBundle      = "dev.sigstore.cosign/bundle"
)

// ClassicSignature is one simple-signing payload and its base64 signature; a keyless one
// also has the certificate, chain (PEM) and Rekor bundle (JSON) annotations.
type ClassicSignature struct {
	Payload     []byte
	Signature   string
	Certificate string
	Chain       string
	Bundle      string
}

// ClassicSignatures reads the signatures in d's sha256-<hex>.sig image; none is not an error.
func (c *Client) ClassicSignatures(ctx context.Context, d name.Digest) ([]ClassicSignature, error) {
	img, err := c.classicImage(ctx, d)
	if err != nil || img == nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	var out []ClassicSignature
	for _, l := range m.Layers {
		if l.MediaType != SimpleSigningMediaType {
			continue
		}
		blob, err := c.FetchBlob(ctx, d.Context(), l.Digest.String(), 1<<20)
		if err != nil {
			return nil, err
		}
		out = append(out, ClassicSignature{Payload: blob, Signature: l.Annotations[AnnotationCosignSignature],
			Certificate: l.Annotations[AnnotationCosignCertificate], Chain: l.Annotations[AnnotationCosignChain], Bundle: l.Annotations[AnnotationCosignBundle]})
	}
	return out, nil
}

func (c *Client) classicImage(ctx context.Context, d name.Digest) (v1.Image, error) {
	tag := d.Context().Tag(ClassicTag(d.DigestStr(), ".sig"))
	img, err := remote.Image(tag, c.remote(ctx)...)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", tag, err)
	}
	return img, nil
}

// AddClassicSignature adds s to d's .sig image (made if missing) and moves the tag to it;
// a layer with the same payload and signature is not added twice.
func (c *Client) AddClassicSignature(ctx context.Context, d name.Digest, s ClassicSignature) error {
	if _, err := base64.StdEncoding.DecodeString(s.Signature); err != nil {
		return fmt.Errorf("classic signature for %s is not base64: %w", d, err)
	}
	img, err := c.classicImage(ctx, d)
	if err != nil {
		return err
	}
	if img == nil {
		img = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	} else if have, err := c.ClassicSignatures(ctx, d); err != nil {
		return err
	} else {
		for _, h := range have {
			if h.Signature == s.Signature && string(h.Payload) == string(s.Payload) {
				return nil
			}
		}
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:       static.NewLayer(s.Payload, SimpleSigningMediaType),
		Annotations: classicAnnotations(s),
	})
	if err != nil {
		return err
	}
	sigDigest, err := c.Write(ctx, d.Context(), img)
	if err != nil {
		return err
	}
	return c.Tag(ctx, sigDigest, ClassicTag(d.DigestStr(), ".sig"))
}

func classicAnnotations(s ClassicSignature) map[string]string {
	a := map[string]string{AnnotationCosignSignature: s.Signature}
	for k, v := range map[string]string{AnnotationCosignCertificate: s.Certificate, AnnotationCosignChain: s.Chain, AnnotationCosignBundle: s.Bundle} {
		if v != "" {
			a[k] = v
		}
	}
	return a
}
