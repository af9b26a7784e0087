package build

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/pkg/oci"
)

// remoteDefaults fills the options every cloud builder defaults alike: a 2h run timeout
// (above ACR's own 1h default, which long builds hit), a 5s poll, a discarding logger and a
// context-aware sleep.
func remoteDefaults(timeout, poll *time.Duration, logger **slog.Logger, sleep *func(context.Context, time.Duration) error) {
	if *timeout == 0 {
		*timeout = 2 * time.Hour
	}
	if *poll <= 0 {
		*poll = 5 * time.Second
	}
	if *logger == nil {
		*logger = slog.New(slog.DiscardHandler)
	}
	if *sleep == nil {
		*sleep = sleepCtx
	}
}

// retrying puts hc under relay's retry layer: r when the caller's chain has it (hc's
// transport then includes it), else a retry layer of the builder's own over hc's
// transport. The hosts of urls are service in its logs.
func retrying(hc *http.Client, r *httpx.Retrier, logger *slog.Logger, sleep func(context.Context, time.Duration) error, service string, urls ...string) *http.Client {
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	hc, r = httpx.Retrying(hc, r, httpx.RetryOptions{Logger: logger, Sleep: sleep})
	for _, s := range urls {
		if u, err := url.Parse(s); err == nil {
			r.Name(service, u.Host)
		}
	}
	return hc
}

// sleepCtx waits d, or less if ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dockerSettings are a cloud build's Dockerfile, build args and target: the image's own
// (images[].docker) over the builder's defaults.
func dockerSettings(dockerfile string, args map[string]string, target string, im Image) (string, map[string]string, string) {
	if d := im.Docker; d != nil {
		if d.Dockerfile != "" {
			dockerfile = d.Dockerfile
		}
		if d.BuildArgs != nil {
			args = d.BuildArgs
		}
		if d.Target != "" {
			target = d.Target
		}
	}
	return dockerfile, args, target
}

// platformRun builds one platform remotely, pushing it under tag, and returns the run's
// id and the digest it pushed.
type platformRun func(ctx context.Context, plat *v1.Platform, tag string, log *bytes.Buffer) (id, digest string, err error)

// buildRemote is what the cloud builders share once the context is uploaded: one run per
// platform (under a tag unique to the context and platform), then the index relay
// assembles and the result read back from the registry.
func buildRemote(ctx context.Context, c *oci.Client, req Request, builder, contextDigest string, run platformRun) (*Result, error) {
	platforms := req.Image.Platforms
	if len(platforms) == 0 {
		platforms = []string{"linux/amd64"}
	}
	res := &Result{Builder: builder}
	var entries []oci.IndexEntry
	var ids []string
	var log bytes.Buffer
	for _, ps := range platforms {
		plat, err := v1.ParsePlatform(ps)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", ps, err)
		}
		id, digest, err := run(ctx, plat, remoteTag(contextDigest, plat), &log)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
		entries = append(entries, oci.IndexEntry{Digest: digest, Platform: *plat})
		res.Platforms = append(res.Platforms, oci.Manifest{Platform: plat.String(), Digest: digest})
	}
	res.RunID, res.Log = strings.Join(ids, ","), log.Bytes()
	digest := entries[0].Digest
	if len(entries) > 1 {
		d, err := c.WriteIndex(ctx, req.Repository, entries)
		if err != nil {
			return nil, err
		}
		digest = d.DigestStr()
	}
	raw, mt, err := c.FetchManifest(ctx, req.Repository.Digest(digest))
	if err != nil {
		return nil, fmt.Errorf("%s: reading back what the build pushed: %w", builder, err)
	}
	res.Digest, res.MediaType, res.Size = digest, string(mt), int64(len(raw))
	res.Ref = req.Repository.Digest(digest).String()
	return res, nil
}

// remoteTag is the tag a remote build pushes a platform's image under: unique to the context
// archive and the platform (variant included), so a digest read back is this build's.
func remoteTag(contextDigest string, plat *v1.Platform) string {
	t := fmt.Sprintf("relay-%s-%s-%s", strings.TrimPrefix(contextDigest, "sha256:")[:12], plat.OS, plat.Architecture)
	if plat.Variant != "" {
		t += "-" + plat.Variant
	}
	return t
}
