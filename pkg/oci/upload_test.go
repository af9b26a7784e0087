package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/relaydev/relay/internal/testutil"
)

// requestLog records "METHOD path content-range" for every request a registry serves.
type requestLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.lines = append(l.lines, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Range"))
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *requestLog) count(prefix, contains string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.HasPrefix(s, prefix) && strings.Contains(s, contains) {
			n++
		}
	}
	return n
}

func TestUploadFaults(t *testing.T) {
	const chunk = 64 << 10
	patchAt := func(off int) func(*http.Request) bool {
		return func(r *http.Request) bool {
			return r.Method == http.MethodPatch && strings.HasPrefix(r.Header.Get("Content-Range"), strconv.Itoa(off)+"-")
		}
	}
	refuseRanges := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPatch && r.Header.Get("Content-Range") != "" {
				http.Error(w, `{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"no chunks here"}]}`, http.StatusRequestedRangeNotSatisfiable)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	// A registry still taking in a torn chunk when asked where the upload stands: it answers
	// with the old offset, then refuses the resumed chunk (distribution 2.8 under load).
	staleStatus := func(next http.Handler) http.Handler {
		var mu sync.Mutex
		answered, refused := false, false
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			stale := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/uploads/") && !answered
			refuse := patchAt(chunk)(r) && answered && !refused
			answered, refused = answered || stale, refused || refuse
			mu.Unlock()
			switch {
			case stale:
				w.Header().Set("Location", r.URL.Path)
				w.Header().Set("Range", fmt.Sprintf("0-%d", chunk-1))
				w.WriteHeader(http.StatusNoContent)
			case refuse:
				http.Error(w, `{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"blob upload invalid"}]}`, http.StatusBadRequest)
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		fault func(http.Handler) http.Handler
		// what the destination's log must show for the uploads
		posts, patches int
		logged         string
	}{
		// go-containerregistry's registry cannot say where an upload stands: the blob starts again.
		// The layer is 3 chunks and a tar header; the config one chunk.
		{"link cut mid-chunk, registry without upload status", testutil.CutUploads(1, chunk/2, patchAt(chunk)), 3, 1 + 2 + 4, "registry dropped the upload"},
		// The resumed chunk is refused: relay asks again, and the blob starts again.
		{"registry's status lags a torn chunk", func(h http.Handler) http.Handler {
			return staleStatus(testutil.CutUploads(1, chunk/2, patchAt(chunk))(h))
		},
			3, 2 + 1 + 4 + 1, "registry dropped the upload"},
		// One refused chunk, then every blob in one PATCH.
		{"registry refuses chunked uploads", refuseRanges, 3, 1 + 2, "registry refuses chunked uploads"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			var buf bytes.Buffer
			var dlog requestLog
			src := mustRepo(t, testutil.Registry(t, true)+"/build/app")
			dst := mustRepo(t, testutil.Registry(t, true, tc.fault, dlog.wrap)+"/acme/app")
			c, err := New(WithChunkSize(chunk), WithJobs(1), WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))))
			if err != nil {
				t.Fatal(err)
			}
			c.sleep = (&instant{}).sleep
			img, _ := random.Image(3*chunk, 1, random.WithSource(rand.New(rand.NewSource(4))))
			d, err := c.Write(ctx, src, img)
			if err != nil {
				t.Fatal(err)
			}
			dlog.lines = nil
			out, err := c.Copy(ctx, d, dst)
			if err != nil {
				t.Fatal(err)
			}
			if out.DigestStr() != d.DigestStr() {
				t.Fatalf("digest changed: %s", out.DigestStr())
			}
			if p := dlog.count("POST ", "/blobs/uploads/"); p != tc.posts {
				t.Errorf("%d upload sessions, want %d:\n%s", p, tc.posts, strings.Join(dlog.lines, "\n"))
			}
			if p := dlog.count("PATCH ", "/blobs/uploads/"); p != tc.patches {
				t.Errorf("%d PATCH requests, want %d:\n%s", p, tc.patches, strings.Join(dlog.lines, "\n"))
			}
			if !strings.Contains(buf.String(), tc.logged) {
				t.Errorf("log lacks %q:\n%s", tc.logged, buf.String())
			}
			verifyLayers(t, c, out)
		})
	}
}

// verifyLayers reads every blob of the image back and checks it against its digest.
func verifyLayers(t *testing.T, c *Client, d name.Digest) {
	t.Helper()
	g, err := c.walk(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range g.blobs {
		rc, err := c.openBlob(context.Background(), d.Context(), b, 0)
		if err != nil {
			t.Fatal(err)
		}
		h, n, err := v1.SHA256(rc)
		rc.Close()
		if err != nil || h != b.Digest || n != b.Size {
			t.Fatalf("blob %s read back as %s, %d bytes (%v)", b.Digest, h, n, err)
		}
	}
}

// TestFanOutSurvivesOneFailingDestination cuts one destination's stream mid-blob while the
// other keeps reading the shared one: both end with the image, and the source is read once
// for the healthy destination plus a resumed read for the broken one.
func TestFanOutSurvivesOneFailingDestination(t *testing.T) {
	const chunk = 64 << 10
	ctx := context.Background()
	var srcLog, aLog requestLog
	src := mustRepo(t, testutil.Registry(t, true, srcLog.wrap)+"/build/app")
	a := mustRepo(t, testutil.Registry(t, true, aLog.wrap)+"/acme/app")
	b := mustRepo(t, testutil.Registry(t, true, testutil.CutUploads(1, chunk/3, func(r *http.Request) bool {
		return r.Method == http.MethodPatch && strings.HasPrefix(r.Header.Get("Content-Range"), strconv.Itoa(chunk)+"-")
	}))+"/acme/app")
	c, err := New(WithChunkSize(chunk), WithJobs(1))
	if err != nil {
		t.Fatal(err)
	}
	c.sleep = (&instant{}).sleep
	img, _ := random.Image(4*chunk, 1, random.WithSource(rand.New(rand.NewSource(8))))
	d, err := c.Write(ctx, src, img)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	srcLog.lines = nil
	outs, err := c.CopyMulti(ctx, d, []name.Repository{a, b})
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range outs {
		verifyLayers(t, c, out)
	}
	if n := srcLog.count("GET ", "/blobs/"+ld.String()); n != 2 {
		t.Fatalf("source layer read %d times, want 2 (shared, then b's own):\n%s", n, strings.Join(srcLog.lines, "\n"))
	}
	size, _ := layers[0].Size()
	if n, want := aLog.count("PATCH ", "/blobs/uploads/"), int((size+chunk-1)/chunk)+1; n != want {
		t.Fatalf("healthy destination got %d PATCHes, want %d (the layer's chunks and the config)", n, want)
	}
}

// TestShortSourceFailsClearly serves a blob shorter than its descriptor: the copy fails
// without retrying forever, names the blob and the cause, and publishes nothing.
func TestShortSourceFailsClearly(t *testing.T) {
	ctx := context.Background()
	img, _ := random.Image(4096, 1, random.WithSource(rand.New(rand.NewSource(2))))
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	short := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String()) {
				w.Header().Set("Content-Length", "100")
				w.Write(bytes.Repeat([]byte{1}, 100))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	src := mustRepo(t, testutil.Registry(t, true, short)+"/build/app")
	dst := mustRepo(t, testutil.Registry(t, true)+"/acme/app")
	c := newClient(t)
	c.sleep = (&instant{}).sleep
	d, err := c.Write(ctx, src, img)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Copy(ctx, d, dst)
	size, _ := layers[0].Size()
	if err == nil || !strings.Contains(err.Error(), ld.String()) || !strings.Contains(err.Error(), fmt.Sprintf("ended after 100 of its %d bytes", size)) {
		t.Fatalf("short source: %v", err)
	}
	if ok, _ := c.Exists(ctx, dst.Digest(d.DigestStr())); ok {
		t.Fatal("an image with a short blob was published")
	}
}

func TestCopyProgressEvents(t *testing.T) {
	var buf bytes.Buffer
	c, err := New(WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))), WithProgressInterval(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	src := mustRepo(t, testutil.Registry(t, true)+"/build/app")
	d, err := c.Write(ctx, src, bigIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if _, err := c.Copy(ctx, d, mustRepo(t, testutil.Registry(t, true)+"/acme/app")); err != nil {
		t.Fatal(err)
	}
	var last map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var rec map[string]any
		json.Unmarshal(line, &rec)
		if rec["event"] == "copy.progress" {
			last = rec
		}
	}
	// The interval never elapses here: the final event still reports the whole copy.
	if last == nil || last["bytes_done"] != last["bytes_total"] || last["blobs_done"] != last["blobs_total"] || last["blobs_total"].(float64) != 28 {
		t.Fatalf("last progress event %v", last)
	}
}
