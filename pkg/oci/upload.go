package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Blob uploads are relay's own rather than go-containerregistry's, for two reasons: an
// interrupted upload resumes at the offset the registry acknowledged (uploads go in chunks,
// each acknowledged with a new location), and one source read can feed several
// destinations. The destination registry checks the digest when the upload is committed,
// as the distribution spec requires, so relay does not hash the stream a second time.

const (
	defaultChunkSize = 64 << 20
	maxResumes       = 6
)

// authTransport returns an authenticated transport for repo with the given scopes, made
// once per registry and scope set: the token dance happens once, and every request shares
// the client's connection pool. Only a handshake that succeeded is kept, and handshakes
// with different registries do not wait for each other.
func (c *Client) authTransport(ctx context.Context, repo name.Repository, scopes ...string) (http.RoundTripper, error) {
	key := repo.RegistryStr() + " " + strings.Join(scopes, " ")
	c.trMu.Lock()
	if c.trs == nil {
		c.trs = map[string]*authEntry{}
	}
	e, ok := c.trs[key]
	if !ok {
		e = &authEntry{}
		c.trs[key] = e
	}
	c.trMu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tr != nil {
		return e.tr, nil
	}
	auth, err := authn.Resolve(ctx, c.kc, repo.Registry)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", repo.RegistryStr(), err)
	}
	tr, err := transport.NewWithContext(ctx, repo.Registry, auth, transport.NewUserAgent(c.rt, c.ua), scopes)
	if err != nil {
		return nil, fmt.Errorf("authenticating to %s: %w", repo.RegistryStr(), err)
	}
	e.tr = tr
	return tr, nil
}

// authEntry is one registry and scope set's transport; mu is held through the handshake,
// so concurrent callers share one.
type authEntry struct {
	mu sync.Mutex
	tr http.RoundTripper
}

func (c *Client) do(ctx context.Context, tr http.RoundTripper, method, u string, body io.Reader, size int64, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	req.Header.Set("User-Agent", c.ua)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return (&http.Client{Transport: tr}).Do(req)
}

func blobURL(repo name.Repository, rest string) string {
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Registry.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), rest)
}

// openBlob streams the blob from off on: a range request, or a full read that skips off
// bytes where the registry ignores ranges.
func (c *Client) openBlob(ctx context.Context, src name.Repository, d v1.Descriptor, off int64) (io.ReadCloser, error) {
	tr, err := c.authTransport(ctx, src, src.Scope(transport.PullScope))
	if err != nil {
		return nil, err
	}
	hdr := map[string]string{}
	if off > 0 {
		hdr["Range"] = fmt.Sprintf("bytes=%d-%d", off, d.Size-1)
	}
	resp, err := c.do(ctx, tr, http.MethodGet, blobURL(src, d.Digest.String()), nil, 0, hdr)
	if err != nil {
		return nil, fmt.Errorf("reading blob %s from %s: %w", d.Digest, src, err)
	}
	if off > 0 && resp.StatusCode != http.StatusPartialContent && resp.StatusCode != http.StatusOK {
		// A registry that refuses ranges still serves the whole blob.
		resp.Body.Close()
		if resp, err = c.do(ctx, tr, http.MethodGet, blobURL(src, d.Digest.String()), nil, 0, nil); err != nil {
			return nil, fmt.Errorf("reading blob %s from %s: %w", d.Digest, src, err)
		}
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		return resp.Body, nil
	case resp.StatusCode == http.StatusOK:
		if off > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
				resp.Body.Close()
				return nil, fmt.Errorf("reading blob %s from %s: %w", d.Digest, src, err)
			}
		}
		return resp.Body, nil
	}
	defer resp.Body.Close()
	return nil, fmt.Errorf("reading blob %s from %s: %w", d.Digest, src, transport.CheckError(resp, http.StatusOK))
}

// upload is one blob upload session at one destination.
type upload struct {
	c       *Client
	src     name.Repository
	dst     name.Repository
	desc    v1.Descriptor
	tr      http.RoundTripper
	loc     string // where the next chunk goes
	off     int64  // bytes the registry acknowledged
	chunked bool
	done    bool // present already, or mounted
	prog    *copyProgress
}

// startUpload opens an upload of d at dst, or reports it done when dst has the blob or
// mounts it from src (same registry, another repository).
func (c *Client) startUpload(ctx context.Context, src, dst name.Repository, d v1.Descriptor, prog *copyProgress) (*upload, error) {
	scopes := []string{dst.Scope(transport.PushScope)}
	sameRegistry := src.RegistryStr() == dst.RegistryStr() && src.RepositoryStr() != dst.RepositoryStr()
	if sameRegistry {
		scopes = append(scopes, src.Scope(transport.PullScope))
	}
	tr, err := c.authTransport(ctx, dst, scopes...)
	if err != nil {
		return nil, err
	}
	u := &upload{c: c, src: src, dst: dst, desc: d, tr: tr, prog: prog}
	_, unchunked := c.unchunked.Load(dst.RegistryStr())
	u.chunked = !unchunked
	resp, err := c.do(ctx, tr, http.MethodHead, blobURL(dst, d.Digest.String()), nil, 0, nil)
	if err != nil {
		return nil, u.errorf("checking for it: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		u.done = true
		return u, nil
	}
	if sameRegistry {
		q := url.Values{"mount": {d.Digest.String()}, "from": {src.RepositoryStr()}}
		if err := u.open(ctx, "?"+q.Encode()); err != nil {
			return nil, err
		}
		if u.done {
			c.logger.Debug("mounted blob", "digest", d.Digest.String(), "from", src.String(), "to", dst.String())
		}
		return u, nil
	}
	return u, u.open(ctx, "")
}

// open starts an upload session (POST); a 201 means the registry mounted the blob.
func (u *upload) open(ctx context.Context, query string) error {
	resp, err := u.c.do(ctx, u.tr, http.MethodPost, blobURL(u.dst, "uploads/")+query, nil, 0, nil)
	if err != nil {
		return u.errorf("starting the upload: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated:
		u.done = true
		return nil
	case http.StatusAccepted:
		loc, err := location(resp)
		if err != nil {
			return u.errorf("starting the upload: %w", err)
		}
		u.loc, u.off = loc, 0
		return nil
	}
	return u.errorf("starting the upload: %w", transport.CheckError(resp, http.StatusAccepted, http.StatusCreated))
}

func location(resp *http.Response) (string, error) {
	l := resp.Header.Get("Location")
	if l == "" {
		return "", fmt.Errorf("the registry answered %s without a Location", resp.Status)
	}
	u, err := resp.Request.URL.Parse(l)
	if err != nil {
		return "", fmt.Errorf("the registry's Location %q: %w", l, err)
	}
	return u.String(), nil
}

func (u *upload) errorf(format string, args ...any) error {
	return fmt.Errorf("uploading blob %s from %s to %s: "+format, append([]any{u.desc.Digest, u.src, u.dst}, args...)...)
}

// shortSourceError is a source stream that ended before the descriptor's size.
type shortSourceError struct{ got, want int64 }

func (e *shortSourceError) Error() string {
	return fmt.Sprintf("the source blob ended after %d of its %d bytes", e.got, e.want)
}

// countingReader counts bytes and notes a clean EOF, which is how a short source shows. The
// HTTP transport may go on reading a request body after the response came back, so once
// the request has failed the reader is detached: later reads fail and count nothing.
type countingReader struct {
	r        io.Reader
	n        atomic.Int64
	eof      atomic.Bool
	detached atomic.Bool
	add      func(int64)
}

var errDetached = errors.New("request body read after its request failed")

func (c *countingReader) Read(p []byte) (int, error) {
	if c.detached.Load() {
		return 0, errDetached
	}
	n, err := c.r.Read(p)
	if c.detached.Load() {
		return 0, errDetached
	}
	c.n.Add(int64(n))
	if c.add != nil && n > 0 {
		c.add(int64(n))
	}
	if err == io.EOF {
		c.eof.Store(true)
	}
	return n, err
}

// detach stops the reader and returns what it counted.
func (c *countingReader) detach() int64 {
	c.detached.Store(true)
	return c.n.Load()
}

// send streams the rest of the blob from r, which must be positioned at u.off.
func (u *upload) send(ctx context.Context, r io.Reader) error {
	size := u.desc.Size
	for u.off < size {
		n := size - u.off
		if u.chunked && n > u.c.chunk {
			n = u.c.chunk
		}
		hdr := map[string]string{"Content-Type": "application/octet-stream"}
		if u.chunked {
			hdr["Content-Range"] = fmt.Sprintf("%d-%d", u.off, u.off+n-1)
		}
		body := &countingReader{r: io.LimitReader(r, n), add: u.prog.addBytes}
		resp, err := u.c.do(ctx, u.tr, http.MethodPatch, u.loc, body, n, hdr)
		if err != nil {
			got := body.detach()
			u.prog.addBytes(-got)
			if body.eof.Load() && got < n {
				return &shortSourceError{got: u.off + got, want: size}
			}
			return err
		}
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNoContent {
			u.prog.addBytes(-body.detach())
			cerr := transport.CheckError(resp, http.StatusAccepted)
			resp.Body.Close()
			if u.chunked && u.off == 0 && (resp.StatusCode == http.StatusRequestedRangeNotSatisfiable || resp.StatusCode == http.StatusBadRequest) {
				return fmt.Errorf("%w: %w", errNoChunks, cerr)
			}
			return cerr
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		loc, err := location(resp)
		if err != nil {
			return err
		}
		u.loc = loc
		u.off += n
	}
	return nil
}

var errNoChunks = errors.New("the registry refuses chunked uploads")

// recover asks the registry how much of the upload it holds and continues from there; an
// upload the registry has forgotten starts again.
func (u *upload) recover(ctx context.Context) error {
	prev := u.off
	resp, err := u.c.do(ctx, u.tr, http.MethodGet, u.loc, nil, 0, nil)
	if err == nil {
		resp.Body.Close()
		var end int64 = -1
		if resp.StatusCode == http.StatusNoContent {
			if _, serr := fmt.Sscanf(resp.Header.Get("Range"), "0-%d", &end); serr == nil && end < u.desc.Size {
				if loc, lerr := location(resp); lerr == nil {
					u.loc = loc
				}
				u.off = 0 // "0-0" is how registries say nothing yet
				if end > 0 {
					u.off = end + 1
				}
				u.prog.addBytes(u.off - prev)
				return nil
			}
		}
	}
	u.c.logger.Info("registry dropped the upload, starting the blob again", "digest", u.desc.Digest.String(), "registry", u.dst.RegistryStr())
	u.prog.addBytes(-prev)
	return u.open(ctx, "")
}

// commit closes the upload; the registry checks the digest of what it received.
func (u *upload) commit(ctx context.Context) error {
	sep := "?"
	if strings.Contains(u.loc, "?") {
		sep = "&"
	}
	resp, err := u.c.do(ctx, u.tr, http.MethodPut, u.loc+sep+"digest="+url.QueryEscape(u.desc.Digest.String()), strings.NewReader(""), 0, map[string]string{"Content-Type": "application/octet-stream"})
	if err != nil {
		return u.errorf("committing it: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusNoContent {
		if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != u.desc.Digest.String() {
			return u.errorf("the registry stored it as %s", got)
		}
		return nil
	}
	cerr := transport.CheckError(resp, http.StatusCreated)
	var te *transport.Error
	if errors.As(cerr, &te) {
		for _, e := range te.Errors {
			if e.Code == transport.DigestInvalidErrorCode || e.Code == transport.SizeInvalidErrorCode {
				return u.errorf("the bytes read from %s do not match the digest %s (the destination rejected them: %w); the source registry serves corrupt content", u.src.RegistryStr(), u.desc.Digest, cerr)
			}
		}
	}
	// A retried commit whose first attempt landed finds the upload gone: the blob decides.
	if head, herr := u.c.do(ctx, u.tr, http.MethodHead, blobURL(u.dst, u.desc.Digest.String()), nil, 0, nil); herr == nil {
		head.Body.Close()
		if head.StatusCode == http.StatusOK {
			return nil
		}
	}
	return u.errorf("committing it: %w", cerr)
}

// resumable reports whether an upload failure is worth continuing: network trouble and
// server-side errors are, a refusal (4xx) is not.
func resumable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var short *shortSourceError
	var spent *RetryBudgetError
	if errors.As(err, &short) || errors.As(err, &spent) {
		return false // the host's budget is spent: resuming would only fail again
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests || te.StatusCode == http.StatusRequestTimeout
	}
	var ne net.Error
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.As(err, &ne)
}

// staleUpload is a resumed chunk refused because the upload moved on after relay asked where
// it stood: a registry still taking in the torn chunk answers with the old offset, then
// refuses the range or forgets the session. Asking again is right; the resume budget bounds it.
func staleUpload(err error) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	if te.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		return true
	}
	for _, e := range te.Errors {
		switch e.Code {
		case transport.BlobUploadInvalidErrorCode, transport.BlobUploadUnknownErrorCode, "RANGE_INVALID":
			return true
		}
	}
	return false
}

// finish drives one upload to its commit: it sends from r, and after an interruption asks
// the registry where it stands and sends the rest from a fresh read of the source.
func (c *Client) finish(ctx context.Context, u *upload, r io.Reader, leave func()) error {
	err := u.send(ctx, r)
	if err != nil && leave != nil {
		leave() // stop holding up the destinations that still read the shared stream
	}
	for attempt := 1; err != nil; attempt++ {
		if errors.Is(err, errNoChunks) {
			c.unchunked.Store(u.dst.RegistryStr(), true)
			c.logger.Info("registry refuses chunked uploads, streaming whole blobs", "registry", u.dst.RegistryStr())
			u.chunked = false
			if err := u.open(ctx, ""); err != nil {
				return err
			}
		} else {
			if ctx.Err() != nil {
				return u.errorf("%w", ctx.Err())
			}
			if attempt > maxResumes || !(resumable(err) || (attempt > 1 && staleUpload(err))) {
				return u.errorf("%w", err)
			}
			wait := min(c.resumeWait<<(attempt-1), 10*time.Second)
			c.logger.Warn("blob upload interrupted, resuming", "registry", u.dst.RegistryStr(), "digest", u.desc.Digest.String(),
				"attempt", attempt, "max_attempts", maxResumes, "reason", err.Error(), "wait_ms", wait.Milliseconds())
			if err := c.sleep(ctx, wait); err != nil {
				return u.errorf("%w", err)
			}
			if err := u.recover(ctx); err != nil {
				return err
			}
			if u.done {
				return nil
			}
			c.logger.Info("blob upload resumes", "registry", u.dst.RegistryStr(), "digest", u.desc.Digest.String(), "offset", u.off, "size", u.desc.Size)
		}
		rc, oerr := c.openBlob(ctx, u.src, u.desc, u.off)
		if oerr != nil {
			return oerr
		}
		err = u.send(ctx, rc)
		rc.Close()
	}
	return u.commit(ctx)
}

// copyBlob copies one blob from src to every destination that lacks it, reading the
// source once. A destination whose stream breaks drops out of the shared read and resumes
// on its own, so one slow or failing registry does not stop the others.
func (c *Client) copyBlob(ctx context.Context, src name.Repository, d v1.Descriptor, dsts []name.Repository, prog *copyProgress) error {
	var ups []*upload
	for _, dst := range dsts {
		u, err := c.startUpload(ctx, src, dst, d, prog)
		if err != nil {
			return err
		}
		if u.done {
			prog.addBytes(d.Size)
		} else {
			ups = append(ups, u)
		}
	}
	if len(ups) == 0 {
		prog.blobDone(len(dsts))
		return nil
	}
	rc, err := c.openBlob(ctx, src, d, 0)
	if err != nil {
		return err
	}
	defer rc.Close()
	if len(ups) == 1 {
		err := c.finish(ctx, ups[0], rc, nil)
		prog.blobDone(len(dsts))
		return err
	}
	fan := &fanWriter{}
	errs := make([]error, len(ups))
	var wg sync.WaitGroup
	for i, u := range ups {
		pr, pw := io.Pipe()
		fan.add(pw)
		wg.Add(1)
		go func() {
			defer wg.Done()
			leave := func() { pr.CloseWithError(errDropped) }
			errs[i] = c.finish(ctx, u, pr, leave)
			leave()
		}()
	}
	// Large pieces: every piece is handed to each destination's goroutine in turn.
	_, cerr := io.CopyBuffer(fan, struct{ io.Reader }{rc}, make([]byte, 1<<20))
	fan.close(cerr)
	wg.Wait()
	prog.blobDone(len(dsts))
	return errors.Join(errs...)
}

var errDropped = errors.New("destination left the shared stream")

// fanWriter writes to every pipe still reading; a pipe whose reader went away is dropped,
// and the write fails only when none is left.
type fanWriter struct {
	ws []*io.PipeWriter
}

func (f *fanWriter) add(w *io.PipeWriter) { f.ws = append(f.ws, w) }

func (f *fanWriter) Write(p []byte) (int, error) {
	live := f.ws[:0]
	for _, w := range f.ws {
		if _, err := w.Write(p); err == nil {
			live = append(live, w)
		} else {
			w.CloseWithError(err)
		}
	}
	f.ws = live
	if len(live) == 0 {
		return 0, errDropped
	}
	return len(p), nil
}

func (f *fanWriter) close(err error) {
	for _, w := range f.ws {
		w.CloseWithError(err)
	}
}
