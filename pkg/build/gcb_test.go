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

// localRemoteBuild builds a remote build's unpacked context with relay's local builder and
// pushes it under the image reference (REPOSITORY:TAG) the remote build was asked for.
func localRemoteBuild(t *testing.T, l *Local, c *oci.Client) testutil.RemoteBuildFunc {
	return func(ctx context.Context, dir, platform, image string) (string, string, error) {
		tag, err := name.NewTag(image)
		if err != nil {
			return "", "", err
		}
		im := filesImage()
		im.Platforms = []string{platform}
		res, err := l.Build(ctx, Request{Image: im, ContextDir: dir, Repository: tag.Context(), Source: request(tag.Context(), im).Source})
		if err != nil {
			return "", "", err
		}
		d, _ := name.NewDigest(res.Ref)
		return res.Digest, "#5 [2/2] COPY static /srv/static\n#6 exporting to image\n", c.Tag(ctx, d, tag.TagStr())
	}
}

func gcbFixture(t *testing.T, logs *bytes.Buffer) (*testutil.CloudBuild, *GCB, name.Repository, *oci.Client) {
	t.Helper()
	l, c, repo := setup(t)
	fake := testutil.StartCloudBuild(t, localRemoteBuild(t, l, c))
	g, err := NewGCB(GCBOptions{Project: "acme-build", Bucket: "acme-build-sources", Tokens: fake.Tokens(), Client: c,
		CloudBuildEndpoint: fake.URL, StorageEndpoint: fake.URL, LoggingEndpoint: fake.URL, ResourceManagerEndpoint: fake.URL, PollInterval: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	return fake, g, repo, c
}

func TestGCBBuildMultiPlatform(t *testing.T) {
	var logs bytes.Buffer
	fake, g, repo, c := gcbFixture(t, &logs)
	fake.Throttle, fake.Expired = 2, 1
	req := request(repo, filesImage())
	res, err := g.Build(context.Background(), req)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	bodies := fake.Bodies()
	if len(bodies) != 2 || len(res.Platforms) != 2 {
		t.Fatalf("builds %v, result %+v", bodies, res)
	}
	for i, b := range bodies {
		opts := b["options"].(map[string]any)
		args := b["steps"].([]any)[0].(map[string]any)["args"].([]any)
		if b["timeout"] != "7200s" || opts["logging"] != "CLOUD_LOGGING_ONLY" || args[2] != req.Image.Platforms[i] {
			t.Errorf("build body %v", b)
		}
	}
	idx, err := c.Resolve(context.Background(), repo.Digest(res.Digest))
	if err != nil || len(idx.Manifests) != 2 || idx.Manifests[1].Digest != res.Platforms[1].Digest {
		t.Fatalf("index %+v: %v", idx, err)
	}
	var want bytes.Buffer
	a, _ := WriteContextArchive(&want, req.ContextDir, req.Source.CommitTime)
	if !bytes.Equal(fake.Object("acme-build-sources", "relay/"+strings.TrimPrefix(a.Digest, "sha256:")+".tar.gz"), want.Bytes()) {
		t.Fatal("the uploaded object is not the context archive")
	}
	if !strings.Contains(logs.String(), "exporting to image") || !strings.Contains(logs.String(), "Google API request failed, retrying") {
		t.Fatalf("log not streamed or retries not logged:\n%s", logs.String())
	}
}

// A build that succeeded is a success even when its log cannot be read.
func TestGCBLogsForbiddenIsNotAFailure(t *testing.T) {
	var logs bytes.Buffer
	fake, g, repo, _ := gcbFixture(t, &logs)
	fake.LogsForbidden = true
	im := filesImage()
	im.Platforms = []string{"linux/amd64"}
	if _, err := g.Build(context.Background(), request(repo, im)); err != nil {
		t.Fatalf("a succeeded build failed for want of its log: %v", err)
	}
	if strings.Count(logs.String(), "cannot read the build log") != 1 || !strings.Contains(logs.String(), "roles/logging.viewer") {
		t.Fatalf("the missing log is not said once, with the fix:\n%s", logs.String())
	}
}

func TestGCBBuildFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(f *testutil.CloudBuild)
		cancel bool
		want   []string
	}{
		{"build fails", func(f *testutil.CloudBuild) { f.Fail = true }, false, []string{"ended FAILURE", "exit code: 2", "USER_BUILD_STEP", "gcloud builds log"}},
		{"build times out", func(f *testutil.CloudBuild) { f.TimeoutRun = true }, false, []string{"ended TIMEOUT"}},
		{"cancelled", func(f *testutil.CloudBuild) { f.Hang = true }, true, []string{"cancelled", "context canceled"}},
		{"credentials keep failing", func(f *testutil.CloudBuild) { f.Expired = 5 }, false, []string{"401", "workload identity or service account"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			fake, g, repo, _ := gcbFixture(t, &logs)
			tc.setup(fake)
			remoteFailure(t, func(ctx context.Context) error {
				_, err := g.Build(ctx, onePlatform()(request(repo, filesImage())))
				return err
			}, func(f func(context.Context, time.Duration) error) { g.o.Sleep = f },
				func() bool { return len(fake.Bodies()) > 0 },
				func() bool { return strings.Contains(strings.Join(fake.Calls(), "\n"), ":cancel") }, tc.cancel, tc.want...)
		})
	}
}

func TestGCBCheck(t *testing.T) {
	for _, tc := range []struct {
		perms []string
		ok    bool
	}{
		{[]string{"cloudbuild.builds.create", "cloudbuild.builds.get", "cloudbuild.builds.update", "storage.objects.create"}, true},
		{[]string{"cloudbuild.builds.create", "cloudbuild.builds.get", "cloudbuild.builds.update"}, false},
		{[]string{"cloudbuild.builds.get", "storage.objects.create"}, false}, // a viewer
	} {
		var logs bytes.Buffer
		fake, g, _, _ := gcbFixture(t, &logs)
		fake.Permissions = tc.perms
		note, err := g.Check(context.Background())
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "roles/cloudbuild.builds.editor")) {
			t.Errorf("%v: %q %v", tc.perms, note, err)
		}
		for _, c := range fake.Calls() {
			if !strings.Contains(c, "testIamPermissions") && !strings.Contains(c, "testPermissions") {
				t.Errorf("the check called %s", c)
			}
		}
	}
}
