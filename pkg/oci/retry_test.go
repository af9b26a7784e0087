package oci

import (
	"context"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/relaydev/relay/internal/testutil"
)

// instant records the waits instead of sleeping.
type instant struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (i *instant) sleep(_ context.Context, d time.Duration) error {
	i.mu.Lock()
	i.waits = append(i.waits, d)
	i.mu.Unlock()
	return nil
}

func TestCopyThroughFaultyRegistries(t *testing.T) {
	ctx := context.Background()
	var srcFaults, dstFaults testutil.FaultCounts
	src := testutil.Registry(t, true, testutil.Faults(0.10, 6, &srcFaults))
	dst := testutil.Registry(t, true, testutil.Faults(0.10, 2, &dstFaults))
	clean := newClient(t)

	// Seed the source through a clean client (the faults are on the server side, so go
	// through the retrying client for everything that follows).
	clock := &instant{}
	rt := Retry(http.DefaultTransport, RetryOptions{Rand: rand.New(rand.NewSource(3)), Sleep: clock.sleep})
	c, err := New(WithTransport(rt), WithJobs(1)) // one request at a time: the seeded faults land on the same requests every run
	if err != nil {
		t.Fatal(err)
	}
	idx := bigIndex(t)
	srcRepo := mustRepo(t, src+"/build/app")
	d, err := c.Write(ctx, srcRepo, idx)
	if err != nil {
		t.Fatalf("push through faults: %v", err)
	}
	out, err := c.Copy(ctx, d, mustRepo(t, dst+"/acme/app"))
	if err != nil {
		t.Fatalf("copy through faults: %v", err)
	}
	if out.DigestStr() != d.DigestStr() {
		t.Fatalf("digest changed: %s", out.DigestStr())
	}
	want, _ := idx.Digest()
	if d.DigestStr() != want.String() {
		t.Fatalf("pushed digest %s, index is %s", d.DigestStr(), want)
	}
	// Read everything back through a clean client: identical content at the destination.
	r, err := clean.Resolve(ctx, out)
	if err != nil || len(r.Manifests) != 4 {
		t.Fatalf("destination: %+v %v", r, err)
	}
	injected := srcFaults.Errors + srcFaults.Throttled + dstFaults.Errors + dstFaults.Throttled
	if injected == 0 || len(clock.waits) == 0 {
		t.Fatalf("no fault was injected or retried (faults %d, waits %d): the test proves nothing", injected, len(clock.waits))
	}
	if srcFaults.Throttled+dstFaults.Throttled == 0 || srcFaults.Reset+dstFaults.Reset == 0 {
		t.Fatalf("the seeds injected no 429 or no reset (429s %d, resets %d): pick seeds that exercise every fault",
			srcFaults.Throttled+dstFaults.Throttled, srcFaults.Reset+dstFaults.Reset)
	}
	throttled := 0
	for _, w := range clock.waits {
		if w == 2*time.Second {
			throttled++
		}
	}
	if srcFaults.Throttled+dstFaults.Throttled > 0 && throttled == 0 {
		t.Fatal("Retry-After: 2 was not honoured")
	}
	t.Logf("requests %d+%d, injected errors %d, 429s %d, resets %d, retries %d",
		srcFaults.Requests, dstFaults.Requests, srcFaults.Errors+dstFaults.Errors, srcFaults.Throttled+dstFaults.Throttled, srcFaults.Reset+dstFaults.Reset, len(clock.waits))
}

func TestRetryPolicy(t *testing.T) {
	var calls int
	status := http.StatusServiceUnavailable
	next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		calls++
		h := http.Header{}
		if status == http.StatusTooManyRequests {
			h.Set("Retry-After", "7")
		}
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: h, Body: http.NoBody, Request: r}, nil
	})
	clock := &instant{}
	rt := Retry(next, RetryOptions{Policy: RetryPolicy{MaxAttempts: 4, Initial: 100 * time.Millisecond, Max: 5 * time.Second, Budget: time.Minute}, Rand: rand.New(rand.NewSource(1)), Sleep: clock.sleep})

	req, _ := http.NewRequest("GET", "http://127.0.0.1:1/v2/x/manifests/v1", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != 503 || calls != 4 || len(clock.waits) != 3 {
		t.Fatalf("503: resp %v err %v calls %d waits %v", resp, err, calls, clock.waits)
	}
	for i, w := range clock.waits {
		if ceil := 100 * time.Millisecond << i; w <= 0 || w > ceil {
			t.Errorf("wait %d = %v, want in (0, %v]", i, w, ceil)
		}
	}

	calls, clock.waits, status = 0, nil, http.StatusTooManyRequests
	rt.RoundTrip(req)
	if clock.waits[0] != 5*time.Second {
		t.Errorf("Retry-After 7 capped at Max: got %v", clock.waits[0])
	}

	calls, status = 0, http.StatusNotFound
	if resp, _ := rt.RoundTrip(req); resp.StatusCode != 404 || calls != 1 {
		t.Errorf("404 retried: %d calls", calls)
	}

	// A streamed body cannot be replayed: one attempt, the caller retries.
	calls, status = 0, http.StatusServiceUnavailable
	body, _ := http.NewRequest("PATCH", "http://127.0.0.1:1/v2/x/blobs/uploads/1", strings.NewReader("x"))
	body.GetBody = nil
	rt.RoundTrip(body)
	if calls != 1 {
		t.Errorf("unreplayable body retried: %d calls", calls)
	}

	// The budget: a host that keeps failing stops costing time.
	tight := Retry(next, RetryOptions{Policy: RetryPolicy{MaxAttempts: 100, Initial: time.Second, Max: time.Second, Budget: 3 * time.Second}, Rand: rand.New(rand.NewSource(1)), Sleep: (&instant{}).sleep})
	_, err = tight.RoundTrip(req)
	var be *RetryBudgetError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("budget: %v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{"3": 3 * time.Second, "Thu, 01 Jan 2026 00:00:09 GMT": 9 * time.Second, "Wed, 31 Dec 2025 00:00:00 GMT": 0} {
		if got, ok := retryAfter(v, now); !ok || got != want {
			t.Errorf("retryAfter(%q) = %v %v", v, got, ok)
		}
	}
	for _, v := range []string{"", "soon", "-1"} {
		if _, ok := retryAfter(v, now); ok {
			t.Errorf("retryAfter(%q) accepted", v)
		}
	}
}

// bigIndex is four platforms of six 32 KiB layers: enough requests for every fault to occur.
func bigIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for i, arch := range []string{"amd64", "arm64", "ppc64le", "s390x"} {
		img, err := random.Image(32<<10, 6, random.WithSource(rand.New(rand.NewSource(int64(100+i)))))
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

// TestOneRetryLayer: under relay's Retry, go-containerregistry retries nothing Retry could
// replay: a registry failing every manifest PUT with 503 sees exactly the attempts relay's
// policy allows (it saw 6 with relay at 2). A streamed blob upload, which Retry cannot
// replay, is still retried by go-containerregistry, which re-opens the layer.
func TestOneRetryLayer(t *testing.T) {
	ctx := context.Background()
	var puts, patches, failedPatch atomic.Int32
	host := testutil.Registry(t, true, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && strings.HasPrefix(r.URL.Path, "/v2/failing/"):
				puts.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			case r.Method == http.MethodPatch:
				if patches.Add(1) == 1 {
					io.Copy(io.Discard, r.Body)
					failedPatch.Add(1)
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	})
	clock := &instant{}
	policy := DefaultRetryPolicy
	policy.MaxAttempts = 2
	c, err := New(WithTransport(Retry(NewTransport(), RetryOptions{Policy: policy, Rand: rand.New(rand.NewSource(1)), Sleep: clock.sleep})), WithJobs(1))
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(256, 1, random.WithSource(rand.New(rand.NewSource(5))))
	// The first blob PATCH fails: only go-containerregistry can send the stream again.
	if _, err := c.Write(ctx, mustRepo(t, host+"/working/app"), img); err != nil || failedPatch.Load() != 1 {
		t.Fatalf("a failed streamed upload was not retried: %v (failed patches %d)", err, failedPatch.Load())
	}
	_, err = c.Write(ctx, mustRepo(t, host+"/failing/app"), img)
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("failing registry: %v", err)
	}
	if n := puts.Load(); n != int32(policy.MaxAttempts) {
		t.Fatalf("the registry saw %d manifest PUTs, want exactly relay's %d attempts", n, policy.MaxAttempts)
	}
}
