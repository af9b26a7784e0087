package build

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/oci"
)

// acrFixture is the fake ACR Tasks, whose runs really build the unpacked context with relay's
// local builder and push to a real registry, and an ACR builder pointed at it.
func acrFixture(t *testing.T, logs *bytes.Buffer) (*testutil.ACRTasks, *ACR, name.Repository, *oci.Client) {
	t.Helper()
	l, c, repo := setup(t)
	fake := testutil.StartACRTasks(t, func(ctx context.Context, dir, platform, repository, tag string) (string, string, error) {
		im := filesImage()
		im.Platforms = []string{platform}
		res, err := l.Build(ctx, Request{Image: im, ContextDir: dir, Repository: repo, Source: request(repo, im).Source})
		if err != nil {
			return "", "", err
		}
		d, _ := name.NewDigest(res.Ref)
		if err := c.Tag(ctx, d, tag); err != nil {
			return "", "", err
		}
		return res.Digest, "Step 3/3 : COPY static /srv/static\nSuccessfully built\n", nil
	})
	a, err := NewACR(ACROptions{SubscriptionID: "sub-1", ResourceGroup: "rg-build", Registry: "relayacr", Credential: fake.Credential(),
		ARMEndpoint: fake.URL, Client: c, PollInterval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	return fake, a, repo, c
}

func TestACRBuildMultiPlatform(t *testing.T) {
	var logs bytes.Buffer
	fake, a, repo, c := acrFixture(t, &logs)
	fake.Throttle, fake.Expired = 2, 1 // the API is busy, and the first token has expired
	req := request(repo, filesImage())
	res, err := a.Build(context.Background(), req)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	// One run per platform, and an index relay assembled from what they pushed.
	reqs := fake.Requests()
	if len(reqs) != 2 || len(res.Platforms) != 2 || res.RunID != "cb1,cb2" {
		t.Fatalf("runs %v, result %+v", reqs, res)
	}
	for _, r := range reqs {
		if r["timeout"].(float64) != 7200 || r["dockerFilePath"] != "Dockerfile" || !strings.HasPrefix(r["imageNames"].([]any)[0].(string), repo.RepositoryStr()+":relay-") {
			t.Errorf("scheduleRun body %v", r)
		}
	}
	idx, err := c.Resolve(context.Background(), repo.Digest(res.Digest))
	if err != nil || len(idx.Manifests) != 2 || idx.Manifests[0].Digest != res.Platforms[0].Digest || idx.Manifests[1].Platform != "linux/arm64" {
		t.Fatalf("index %+v: %v", idx, err)
	}
	// The uploaded context is the deterministic archive of the checkout.
	var want bytes.Buffer
	WriteContextArchive(&want, req.ContextDir, req.Source.CommitTime)
	if !bytes.Equal(fake.Upload(1), want.Bytes()) {
		t.Fatal("the uploaded context is not the context archive")
	}
	if !strings.Contains(logs.String(), "Successfully built") || !strings.Contains(logs.String(), "ACR Tasks API request failed, retrying") {
		t.Fatalf("build log not streamed, or retries not logged:\n%s", logs.String())
	}
	if !strings.Contains(string(res.Log), "Step 1/3 : FROM scratch") {
		t.Fatalf("result log: %s", res.Log)
	}
}

func TestACRBuildFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(f *testutil.ACRTasks)
		cancel bool
		want   []string
	}{
		{"build fails", func(f *testutil.ACRTasks) { f.Fail = true }, false, []string{"acr run cb1 ended Failed", "make: *** [Makefile:3: all] Error 2", "az acr task logs -r relayacr --run-id cb1"}},
		{"run times out", func(f *testutil.ACRTasks) { f.TimeoutRun = true }, false, []string{"ended Timeout", "Run timed out"}},
		{"cancelled", func(f *testutil.ACRTasks) { f.Hang = true }, true, []string{"run cb1 cancelled", "context canceled"}},
		{"credentials keep failing", func(f *testutil.ACRTasks) { f.Expired = 5 }, false, []string{"401", "federation or managed identity"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			fake, a, repo, _ := acrFixture(t, &logs)
			tc.setup(fake)
			remoteFailure(t, func(ctx context.Context) error {
				_, err := a.Build(ctx, onePlatform()(request(repo, filesImage())))
				return err
			}, func(f func(context.Context, time.Duration) error) { a.o.Sleep = f },
				func() bool { return len(fake.Requests()) > 0 },
				func() bool { return strings.Contains(strings.Join(fake.Calls(), "\n"), "/runs/cb1/cancel") }, tc.cancel, tc.want...)
		})
	}
}

func TestACROptions(t *testing.T) {
	c, _ := oci.New()
	for _, o := range []ACROptions{
		{ResourceGroup: "rg", Registry: "r", Credential: testutil.StartACRTasks(t, nil).Credential(), Client: c},
		{SubscriptionID: "s", ResourceGroup: "rg", Registry: "r", Client: c},
		{SubscriptionID: "s", ResourceGroup: "rg", Registry: "r", Credential: testutil.StartACRTasks(t, nil).Credential(), Client: c, Timeout: time.Minute},
	} {
		if _, err := NewACR(o); err == nil {
			t.Errorf("accepted %+v", o)
		}
	}
}

func TestACRCheck(t *testing.T) {
	for _, tc := range []struct {
		actions []string
		ok      bool
	}{
		{[]string{"*"}, true},
		{[]string{"Microsoft.ContainerRegistry/*"}, true},
		{[]string{"Microsoft.ContainerRegistry/registries/pull/read", "Microsoft.ContainerRegistry/registries/push/write"}, false}, // AcrPush is not enough
		{nil, false},
	} {
		var logs bytes.Buffer
		fake, a, _, _ := acrFixture(t, &logs)
		fake.Actions = tc.actions
		note, err := a.Check(context.Background())
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "scheduleRun/action")) {
			t.Errorf("%v: %q %v", tc.actions, note, err)
		}
		for _, c := range fake.Calls() {
			if !strings.HasPrefix(c, "GET ") {
				t.Errorf("the check wrote: %s", c)
			}
		}
	}
}
