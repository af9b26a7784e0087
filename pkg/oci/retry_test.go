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
