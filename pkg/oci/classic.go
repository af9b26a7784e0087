package oci

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sync"

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

// ClassicSignature is one layer of cosign's classic format, relay's one type for it (the
// signers make it, the registry stores it, the verifier checks it): in a .sig image a
// simple-signing payload and its base64 signature, in a .att image a DSSE envelope (its
// signature inside, Signature empty) and its predicate type; keyless ones also carry the
// Fulcio certificate and chain (PEM) and the Rekor v1 entry as cosign's bundle (JSON),
// which is what cosign v2's default verify reads.
type ClassicSignature struct {
	Payload       []byte
	Signature     string // base64
	Certificate   []byte // PEM, keyless only
	Chain         []byte // PEM, keyless only
	Bundle        []byte // JSON of dev.sigstore.cosign/bundle: keyless, or a logged key
	PredicateType string // .att only
}

// DSSEMediaType is the layer media type of a classic .att attestation.
const DSSEMediaType = "application/vnd.dsse.envelope.v1+json"

// annotationPredicateType is what cosign names a classic attestation's predicate type.
const annotationPredicateType = "predicateType"

// ClassicSignatures reads the signatures in d's sha256-<hex>.sig image; none is not an error.
func (c *Client) ClassicSignatures(ctx context.Context, d name.Digest) ([]ClassicSignature, error) {
	return c.classicLayers(ctx, d, ".sig")
}

// ClassicAttestations reads the DSSE envelopes in d's sha256-<hex>.att image.
func (c *Client) ClassicAttestations(ctx context.Context, d name.Digest) ([]ClassicSignature, error) {
	return c.classicLayers(ctx, d, ".att")
}

func classicMediaType(suffix string) types.MediaType {
	if suffix == ".att" {
		return DSSEMediaType
	}
	return SimpleSigningMediaType
}

func (c *Client) classicLayers(ctx context.Context, d name.Digest, suffix string) ([]ClassicSignature, error) {
	img, err := c.classicImage(ctx, d, suffix)
	if err != nil || img == nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	var out []ClassicSignature
	for _, l := range m.Layers {
		if l.MediaType != classicMediaType(suffix) {
			continue
		}
		blob, err := c.FetchBlob(ctx, d.Context(), l.Digest.String(), 16<<20)
		if err != nil {
			return nil, err
		}
		out = append(out, ClassicSignature{Payload: blob, Signature: l.Annotations[AnnotationCosignSignature],
			Certificate: bytesOf(l.Annotations[AnnotationCosignCertificate]), Chain: bytesOf(l.Annotations[AnnotationCosignChain]),
			Bundle: bytesOf(l.Annotations[AnnotationCosignBundle]), PredicateType: l.Annotations[annotationPredicateType]})
	}
	return out, nil
}

func (c *Client) classicImage(ctx context.Context, d name.Digest, suffix string) (v1.Image, error) {
	tag := d.Context().Tag(ClassicTag(d.DigestStr(), suffix))
	img, err := remote.Image(tag, c.remote(ctx, tag.Context(), transport.PullScope)...)
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
	if _, err := base64.StdEncoding.DecodeString(s.Signature); err != nil || s.Signature == "" {
		return fmt.Errorf("classic signature for %s is empty or not base64", d)
	}
	return c.addClassic(ctx, d, ".sig", s)
}

// AddClassicAttestation adds the DSSE envelope s.Payload to d's .att image, as
// AddClassicSignature does for signatures.
func (c *Client) AddClassicAttestation(ctx context.Context, d name.Digest, s ClassicSignature) error {
	s.Signature = "" // cosign's .att layers carry it inside the envelope
	return c.addClassic(ctx, d, ".att", s)
}

func (c *Client) addClassic(ctx context.Context, d name.Digest, suffix string, s ClassicSignature) error {
	// The .sig/.att image is read, extended and re-tagged: one writer per tag at a time.
	mu, _ := c.subjects.LoadOrStore(d.String()+suffix, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	img, err := c.classicImage(ctx, d, suffix)
	if err != nil {
		return err
	}
	if img == nil {
		img = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	} else if have, err := c.classicLayers(ctx, d, suffix); err != nil {
		return err
	} else {
		for _, h := range have {
			if h.Signature == s.Signature && string(h.Payload) == string(s.Payload) {
				return nil
			}
		}
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:       static.NewLayer(s.Payload, classicMediaType(suffix)),
		Annotations: classicAnnotations(s),
	})
	if err != nil {
		return err
	}
	sigDigest, err := c.Write(ctx, d.Context(), img)
	if err != nil {
		return err
	}
	return c.Tag(ctx, sigDigest, ClassicTag(d.DigestStr(), suffix))
}

// bytesOf is an annotation's value, nil when absent.
func bytesOf(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

func classicAnnotations(s ClassicSignature) map[string]string {
	a := map[string]string{AnnotationCosignSignature: s.Signature}
	for k, v := range map[string]string{AnnotationCosignCertificate: string(s.Certificate), AnnotationCosignChain: string(s.Chain), AnnotationCosignBundle: string(s.Bundle), annotationPredicateType: s.PredicateType} {
		if v != "" {
			a[k] = v
		}
	}
	return a
}
