// Package oci is relay's registry client: resolve, copy by digest with referrers,
// attach Sigstore bundles as OCI 1.1 referrers, tag, and the --local sandbox registry.
package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/relaydev/relay/internal/backoff"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of Sigstore bundles attached as referrers (cosign's BUNDLE_SPEC).
const (
	BundleMediaType         = "application/vnd.dev.sigstore.bundle.v0.3+json"
	EmptyMediaType          = "application/vnd.oci.empty.v1+json"
	AnnotationBundleContent = "dev.sigstore.bundle.content"
	AnnotationPredicateType = "dev.sigstore.bundle.predicateType"
	AnnotationCreated       = "org.opencontainers.image.created"
	AnnotationTitle         = "org.opencontainers.image.title"
	maxManifestSize         = 4 << 20
	maxBundleSize           = 64 << 20
	defaultJobs             = 4
	defaultUserAgent        = "relay"
)

// Client talks to registries. It is safe for concurrent use.
type Client struct {
	logger *slog.Logger
	rt     http.RoundTripper
	ua     string
	jobs   int
	kc     authn.Keychain
	now    func() time.Time
	modes  sync.Map // registry -> referrers mode, probed once per run
	every  time.Duration

	chunk      int64                                            // bytes per upload chunk
	unchunked  sync.Map                                         // registries that refused a chunk
	resumeWait time.Duration                                    // first wait before resuming an upload
	sleep      func(ctx context.Context, d time.Duration) error // a seam for tests
	trMu       sync.Mutex
	trs        map[string]*authEntry // authenticated transports by registry and scopes
	// subjects serialises attaches to one subject: without a referrers API each attach
	// rewrites the subject's sha256-<hex> tag index, and two at once would lose one.
	subjects sync.Map // repository@digest -> *sync.Mutex
}

// Option configures a Client.
type Option func(*Client) error

// WithLogger injects a logger; the client is silent without one.
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) error {
		if l == nil {
			return errors.New("oci: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithTransport sets the HTTP transport (decorated with retries, guards, user agent by the caller).
func WithTransport(rt http.RoundTripper) Option {
	return func(c *Client) error {
		if rt == nil {
			return errors.New("oci: nil transport")
		}
		c.rt = rt
		return nil
	}
}

// WithKeychain sets where credentials come from (default: docker config.json and its
// credential helpers).
func WithKeychain(kc authn.Keychain) Option {
	return func(c *Client) error {
		if kc == nil {
			return errors.New("oci: nil keychain")
		}
		c.kc = kc
		return nil
	}
}

// WithJobs bounds the parallelism of copies.
func WithJobs(n int) Option {
	return func(c *Client) error {
		if n < 1 {
			return fmt.Errorf("oci: jobs must be at least 1, got %d", n)
		}
		c.jobs = n
		return nil
	}
}

// WithUserAgent sets the User-Agent of every request.
func WithUserAgent(ua string) Option {
	return func(c *Client) error { c.ua = ua; return nil }
}

// WithProgressInterval sets how often a push logs a progress event (default 5s; 0 turns
// progress events off). Events are log records, never a progress bar.
func WithProgressInterval(d time.Duration) Option {
	return func(c *Client) error {
		if d < 0 {
			return fmt.Errorf("oci: negative progress interval %s", d)
		}
		c.every = d
		return nil
	}
}

// WithChunkSize sets how many bytes go in one blob upload request; an interrupted upload
// resumes at the last chunk the registry acknowledged.
func WithChunkSize(n int64) Option {
	return func(c *Client) error {
		if n < 1 {
			return fmt.Errorf("oci: chunk size must be positive, got %d", n)
		}
		c.chunk = n
		return nil
	}
}

// WithClock fixes the clock used for annotation timestamps (tests).
func WithClock(now func() time.Time) Option {
	return func(c *Client) error { c.now = now; return nil }
}

// New validates the options and returns a client.
func New(opts ...Option) (*Client, error) {
	c := &Client{
		logger: slog.New(slog.DiscardHandler),
		rt:     nil, // Retry over NewTransport, with the final logger
		ua:     defaultUserAgent,
		jobs:   defaultJobs,
		kc:     authn.DefaultKeychain,
		now:    time.Now,
		every:  5 * time.Second,

		chunk:      defaultChunkSize,
		resumeWait: 500 * time.Millisecond,
		sleep:      backoff.Sleep,
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if c.rt == nil {
		c.rt = Retry(NewTransport(), RetryOptions{Logger: c.logger})
	}
	return c, nil
}

// base is the options every remote call starts from; each call still runs under its own ctx.
func (c *Client) base(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(c.rt),
		remote.WithAuthFromKeychain(c.kc),
		remote.WithUserAgent(c.ua),
		remote.WithJobs(c.jobs),
		remote.WithRetryPredicate(ggcrRetry),
	}
}

// remote is the options for a call about repo that needs scope (pull or push). It reuses
// the client's authenticated transport for the repository and scope, the one relay's own
// blob and probe requests use: go-containerregistry would otherwise ping the registry and
// fetch a token on every call, which is most of a copy that finds everything in place. The
// transport is used as it is, so relay's Retry is the only retry layer and logs each one.
func (c *Client) remote(ctx context.Context, repo name.Repository, scope string) []remote.Option {
	opts := c.base(ctx)
	if tr, err := c.authTransport(ctx, repo, repo.Scope(scope)); err == nil {
		opts = append(opts, remote.WithTransport(tr))
	} // else go-containerregistry shakes hands itself and reports why it fails
	return opts
}

// ManifestTooLargeError is a manifest over the 4 MiB that registries are required to accept
// and clients may refuse (OCI distribution spec); relay refuses it rather than hold it.
type ManifestTooLargeError struct {
	Ref  string
	Size int
}

func (e *ManifestTooLargeError) Error() string {
	return fmt.Sprintf("manifest %s is %d bytes, over the 4 MiB limit: the registry served something that is not a sane manifest", e.Ref, e.Size)
}

// get is remote.Get with the manifest size limit relay holds every registry to.
func (c *Client) get(ctx context.Context, ref name.Reference) (*remote.Descriptor, error) {
	desc, err := remote.Get(ref, c.remote(ctx, ref.Context(), transport.PullScope)...)
	if err != nil {
		return nil, err
	}
	if len(desc.Manifest) > maxManifestSize {
		return nil, &ManifestTooLargeError{Ref: ref.String(), Size: len(desc.Manifest)}
	}
	return desc, nil
}

// Manifest is one platform manifest of an image.
type Manifest struct {
	Platform string `json:"platform"`
	Digest   string `json:"digest"`
}

// Resolved describes what a digest points at.
type Resolved struct {
	Digest    string     `json:"digest"`
	MediaType string     `json:"media_type"`
	Size      int64      `json:"size"`
	Manifests []Manifest `json:"manifests,omitempty"`
}

// Resolve reads the manifest behind ref and, for an index, its platform manifests.
func (c *Client) Resolve(ctx context.Context, ref name.Reference) (*Resolved, error) {
	desc, err := c.get(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	r := &Resolved{Digest: desc.Digest.String(), MediaType: string(desc.MediaType), Size: desc.Size}
	if desc.MediaType.IsIndex() {
		im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, fmt.Errorf("parsing index %s: %w", ref, err)
		}
		for _, m := range im.Manifests {
			p := ""
			if m.Platform != nil {
				p = m.Platform.String()
			}
			r.Manifests = append(r.Manifests, Manifest{Platform: p, Digest: m.Digest.String()})
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			return nil, fmt.Errorf("reading image %s: %w", ref, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("reading config of %s: %w", ref, err)
		}
		p := "" // an artifact or a config without os/architecture names no platform
		if pl := cf.Platform(); pl != nil {
			p = pl.String()
		}
		r.Manifests = []Manifest{{Platform: p, Digest: desc.Digest.String()}}
	}
	return r, nil
}

// Exists reports whether the digest is present in the repository.
func (c *Client) Exists(ctx context.Context, ref name.Digest) (bool, error) {
	_, err := remote.Head(ref, c.remote(ctx, ref.Context(), transport.PullScope)...)
	if err == nil {
		return true, nil
	}
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return false, nil
	}
	return false, fmt.Errorf("checking %s: %w", ref, err)
}

// Write pushes an image or index by digest to repo and returns the digest reference.
func (c *Client) Write(ctx context.Context, repo name.Repository, t remote.Taggable) (name.Digest, error) {
	opts := c.base(ctx) // go-containerregistry's own pusher: it mounts layers from other repositories
	var done chan struct{}
	if c.every > 0 {
		updates := make(chan v1.Update, 16)
		done = make(chan struct{})
		opts = append(opts, remote.WithProgress(updates))
		go c.progress(repo, updates, done)
	}
	var h v1.Hash
	var err error
	switch v := t.(type) {
	case v1.ImageIndex:
		h, err = v.Digest()
		if err == nil {
			err = remote.WriteIndex(repo.Digest(h.String()), v, opts...)
		}
	case v1.Image:
		h, err = v.Digest()
		if err == nil {
			err = remote.Write(repo.Digest(h.String()), v, opts...)
		}
	default:
		err = fmt.Errorf("oci: cannot write %T", t)
	}
	if done != nil && err == nil {
		<-done // go-containerregistry closes the channel when a write it started ends
	}
	if err != nil {
		return name.Digest{}, fmt.Errorf("pushing to %s: %w", repo, err)
	}
	return repo.Digest(h.String()), nil
}

// progress logs bytes done at most once per interval, and once at the end of a push that
// moved any bytes.
func (c *Client) progress(repo name.Repository, updates <-chan v1.Update, done chan<- struct{}) {
	defer close(done)
	var last v1.Update
	next := time.Now().Add(c.every)
	for u := range updates {
		if u.Error != nil {
			continue
		}
		last = u
		if time.Now().After(next) {
			c.logger.Info("push progress", "event", "copy.progress", "image", repo.String(), "bytes_done", u.Complete, "bytes_total", u.Total)
			next = time.Now().Add(c.every)
		}
	}
	if last.Total > 0 {
		c.logger.Info("push progress", "event", "copy.progress", "image", repo.String(), "bytes_done", last.Complete, "bytes_total", last.Total)
	}
}

// Referrers modes of a registry.
const (
	ReferrersAPI       = "referrers-api"
	ReferrersTagSchema = "tag-schema"
)

// ReferrersMode probes once per registry whether it serves the OCI referrers API, or
// whether referrers live in the tag schema (sha256-<hex> index tags). repo must exist.
func (c *Client) ReferrersMode(ctx context.Context, repo name.Repository) (string, error) {
	key := repo.RegistryStr()
	if v, ok := c.modes.Load(key); ok {
		return v.(string), nil
	}
	tr, err := c.authTransport(ctx, repo, repo.Scope(transport.PullScope))
	if err != nil {
		return "", fmt.Errorf("probing referrers support of %s: %w", key, err)
	}
	u := fmt.Sprintf("%s://%s/v2/%s/referrers/sha256:%s", repo.Registry.Scheme(), key, repo.RepositoryStr(), strings.Repeat("0", 64))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex))
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", fmt.Errorf("probing referrers support of %s: %w", key, err)
	}
	resp.Body.Close()
	mode := ReferrersTagSchema
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), string(types.OCIImageIndex)) {
		mode = ReferrersAPI
	}
	if _, loaded := c.modes.LoadOrStore(key, mode); !loaded {
		c.logger.Info("registry referrers support", "registry", key, "mode", mode)
	}
	return mode, nil
}

// ClassicSuffixes are cosign's tag-based attachments: sha256-<hex>.sig, .att, .sbom.
var ClassicSuffixes = []string{".sig", ".att", ".sbom"}

// ClassicTag is the tag cosign stores an attachment of digest under.
func ClassicTag(digest, suffix string) string {
	return strings.Replace(digest, ":", "-", 1) + suffix
}

// Referrers lists the manifests whose subject is d (referrers API, or the tag schema fallback).
// Where the registry is known to have no referrers API, the tag schema is read directly.
func (c *Client) Referrers(ctx context.Context, d name.Digest) ([]v1.Descriptor, error) {
	if mode, ok := c.modes.Load(d.RegistryStr()); ok && mode == ReferrersTagSchema {
		return c.tagSchemaReferrers(ctx, d)
	}
	idx, err := remote.Referrers(d, c.remote(ctx, d.Context(), transport.PullScope)...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		return nil, fmt.Errorf("listing referrers of %s: %w", d, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("listing referrers of %s: %w", d, err)
	}
	return im.Manifests, nil
}

// tagSchemaReferrers reads the sha256-<hex> index that lists d's referrers on a registry
// without the referrers API; no such tag means none.
func (c *Client) tagSchemaReferrers(ctx context.Context, d name.Digest) ([]v1.Descriptor, error) {
	tag := d.Context().Tag(ClassicTag(d.DigestStr(), ""))
	desc, err := c.get(ctx, tag)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		return nil, fmt.Errorf("listing referrers of %s: %w", d, err)
	}
	if desc.MediaType != types.OCIImageIndex {
		return nil, fmt.Errorf("listing referrers of %s: the referrers tag %s holds a %s, not an OCI image index", d, tag, desc.MediaType)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("listing referrers of %s: %s: %w", d, tag, err)
	}
	return im.Manifests, nil
}

// Image reads the platform image at d through the client's transport (layers on demand).
func (c *Client) Image(ctx context.Context, d name.Digest) (v1.Image, error) {
	img, err := remote.Image(d, c.remote(ctx, d.Context(), transport.PullScope)...)
	if err != nil {
		return nil, fmt.Errorf("reading image %s: %w", d, err)
	}
	return img, nil
}

// FetchManifest returns the raw manifest at d.
func (c *Client) FetchManifest(ctx context.Context, d name.Digest) ([]byte, types.MediaType, error) {
	desc, err := c.get(ctx, d)
	if err != nil {
		return nil, "", fmt.Errorf("fetching manifest %s: %w", d, err)
	}
	return desc.Manifest, desc.MediaType, nil
}

// FetchBlob reads a blob of at most max bytes and checks its digest.
func (c *Client) FetchBlob(ctx context.Context, repo name.Repository, digest string, max int64) ([]byte, error) {
	l, err := remote.Layer(repo.Digest(digest), c.remote(ctx, repo, transport.PullScope)...)
	if err != nil {
		return nil, fmt.Errorf("fetching blob %s@%s: %w", repo, digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("fetching blob %s@%s: %w", repo, digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading blob %s@%s: %w", repo, digest, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("blob %s@%s is larger than %d bytes", repo, digest, max)
	}
	h, _, _ := v1.SHA256(bytes.NewReader(b))
	if h.String() != digest {
		return nil, fmt.Errorf("blob %s@%s: content has digest %s", repo, digest, h)
	}
	return b, nil
}

// Attachment is a Sigstore bundle found as a referrer.
type Attachment struct {
	Digest        string // the referrer manifest
	PredicateType string
	Bundle        []byte
}

// Bundles returns the Sigstore bundles attached to d, optionally only those with the
// given predicate type.
func (c *Client) Bundles(ctx context.Context, d name.Digest, predicateType string) ([]Attachment, error) {
	refs, err := c.Referrers(ctx, d)
	if err != nil {
		return nil, err
	}
	var out []Attachment
	for _, r := range refs {
		pt := r.Annotations[AnnotationPredicateType]
		if r.ArtifactType != "" && r.ArtifactType != BundleMediaType && r.ArtifactType != EmptyMediaType {
			continue
		}
		if predicateType != "" && pt != "" && pt != predicateType {
			continue
		}
		raw, _, err := c.FetchManifest(ctx, d.Context().Digest(r.Digest.String()))
		if err != nil {
			return nil, err
		}
		var m v1.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("parsing referrer %s of %s: %w", r.Digest, d, err)
		}
		if m.ArtifactType != BundleMediaType || len(m.Layers) != 1 {
			continue
		}
		pt = m.Annotations[AnnotationPredicateType]
		if predicateType != "" && pt != predicateType {
			continue
		}
		b, err := c.FetchBlob(ctx, d.Context(), m.Layers[0].Digest.String(), maxBundleSize)
		if err != nil {
			return nil, err
		}
		out = append(out, Attachment{Digest: r.Digest.String(), PredicateType: pt, Bundle: b})
	}
	return out, nil
}

// AttachBundle stores a Sigstore bundle as an OCI 1.1 referrer of subject, in the layout of
// cosign's BUNDLE_SPEC, and returns the referrer manifest's digest.
func (c *Client) AttachBundle(ctx context.Context, subject name.Digest, subjectMediaType types.MediaType, subjectSize int64, bundle []byte, content, predicateType string) (string, error) {
	repo := subject.Context()
	bl := static.NewLayer(bundle, BundleMediaType)
	bh, _ := bl.Digest()
	empty := static.NewLayer([]byte("{}"), EmptyMediaType)
	eh, _ := empty.Digest()
	for _, l := range []v1.Layer{empty, bl} {
		if err := remote.WriteLayer(repo, l, c.remote(ctx, repo, transport.PushScope)...); err != nil {
			return "", fmt.Errorf("uploading bundle for %s: %w", subject, err)
		}
	}
	sh, err := v1.NewHash(subject.DigestStr())
	if err != nil {
		return "", err
	}
	ann := map[string]string{
		AnnotationBundleContent: content,
		AnnotationCreated:       c.now().UTC().Format(time.RFC3339),
	}
	if predicateType != "" {
		ann[AnnotationPredicateType] = predicateType
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  BundleMediaType,
		Config:        v1.Descriptor{MediaType: EmptyMediaType, Digest: eh, Size: 2},
		Layers: []v1.Descriptor{{
			MediaType:   BundleMediaType,
			Digest:      bh,
			Size:        int64(len(bundle)),
			Annotations: map[string]string{AnnotationTitle: bh.Algorithm + "-" + bh.Hex + ".sigstore.json"},
		}},
		Subject:     &v1.Descriptor{MediaType: subjectMediaType, Digest: sh, Size: subjectSize},
		Annotations: ann,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	mh, _, _ := v1.SHA256(bytes.NewReader(raw))
	mu, _ := c.subjects.LoadOrStore(subject.String(), new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if err := remote.Put(repo.Digest(mh.String()), rawManifest{raw: raw, mt: types.OCIManifestSchema1}, c.remote(ctx, repo, transport.PushScope)...); err != nil {
		return "", fmt.Errorf("attaching bundle to %s: %w", subject, err)
	}
	c.logger.Debug("attached", "image", subject.String(), "referrer", mh.String(), "predicate_type", predicateType)
	return mh.String(), nil
}

// Tag points tag at the digest, after checking the digest is present.
func (c *Client) Tag(ctx context.Context, d name.Digest, tag string) error {
	t := d.Context().Tag(tag)
	if cur, err := c.TagDigest(ctx, t); err == nil && cur == d.DigestStr() {
		c.logger.Debug("tag already points at the digest", "image", t.String(), "digest", cur)
		return nil
	}
	// Reading the manifest is also the presence check: a tag never points at a missing digest.
	desc, err := c.get(ctx, d)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return fmt.Errorf("tagging %s as %s: the digest is not in the repository", d, tag)
		}
		return fmt.Errorf("tagging %s: %w", d, err)
	}
	if err := remote.Put(t, rawManifest{raw: desc.Manifest, mt: desc.MediaType}, c.remote(ctx, t.Context(), transport.PushScope)...); err != nil {
		return fmt.Errorf("tagging %s as %s: %w", d, tag, err)
	}
	return nil
}

// TagDigest returns the digest a tag points at, or "" if the tag does not exist.
func (c *Client) TagDigest(ctx context.Context, t name.Tag) (string, error) {
	desc, err := remote.Head(t, c.remote(ctx, t.Context(), transport.PullScope)...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return "", nil
		}
		return "", fmt.Errorf("reading tag %s: %w", t, err)
	}
	return desc.Digest.String(), nil
}

type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// IndexEntry is one platform manifest of an index WriteIndex assembles.
type IndexEntry struct {
	Digest   string
	Platform v1.Platform
}

// WriteIndex writes an OCI image index of manifests already in repo (as a cloud builder
// leaves them, one per platform) and returns its digest; each child must exist first.
func (c *Client) WriteIndex(ctx context.Context, repo name.Repository, entries []IndexEntry) (name.Digest, error) {
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, e := range entries {
		raw, mt, err := c.FetchManifest(ctx, repo.Digest(e.Digest))
		if err != nil {
			return name.Digest{}, fmt.Errorf("index child %s: %w", e.Digest, err)
		}
		h, err := v1.NewHash(e.Digest)
		if err != nil {
			return name.Digest{}, err
		}
		p := e.Platform
		idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: mt, Digest: h, Size: int64(len(raw)), Platform: &p})
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		return name.Digest{}, err
	}
	h, _, _ := v1.SHA256(bytes.NewReader(raw))
	d := repo.Digest(h.String())
	if err := remote.Put(d, rawManifest{raw: raw, mt: types.OCIImageIndex}, c.remote(ctx, repo, transport.PushScope)...); err != nil {
		return name.Digest{}, fmt.Errorf("writing the index to %s: %w", repo, err)
	}
	return d, nil
}
