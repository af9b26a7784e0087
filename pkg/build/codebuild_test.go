package build

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/oci"
)

func codeBuildFixture(t *testing.T, logs *bytes.Buffer) (*testutil.CodeBuildFake, *CodeBuild, name.Repository, *oci.Client) {
	t.Helper()
	l, c, repo := setup(t)
	fake := testutil.StartCodeBuild(t, localRemoteBuild(t, l, c))
	creds := testutil.FakeAWSCredentials
	cfg := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(fake.URL),
		Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, "")}
	cb, err := NewCodeBuild(CodeBuildOptions{Project: "relay-images", Bucket: "relay-sources", AWS: cfg, Client: c, PollInterval: time.Millisecond,
		S3Options: []func(*s3.Options){func(o *s3.Options) { o.UsePathStyle = true }},
		Logger:    slog.New(slog.NewTextHandler(logs, nil)), Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	return fake, cb, repo, c
}

func TestCodeBuildMultiPlatform(t *testing.T) {
	var logs bytes.Buffer
	fake, cb, repo, c := codeBuildFixture(t, &logs)
	fake.Throttle = 1 // the SDK's retryer takes it
	req := request(repo, filesImage())
	res, err := cb.Build(context.Background(), req)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	starts := fake.Starts()
	if len(starts) != 2 || len(res.Platforms) != 2 {
		t.Fatalf("builds %v, result %+v", starts, res)
	}
	for _, s := range starts {
		if s["timeoutInMinutesOverride"].(float64) != 120 || !strings.Contains(s["buildspecOverride"].(string), `docker build --platform "$PLATFORM"`) {
			t.Errorf("StartBuild input %v", s)
		}
	}
	// The digests were resolved from the registry after each build; the index holds them.
	idx, err := c.Resolve(context.Background(), repo.Digest(res.Digest))
	if err != nil || len(idx.Manifests) != 2 || idx.Manifests[0].Digest != res.Platforms[0].Digest {
		t.Fatalf("index %+v: %v", idx, err)
	}
	var want bytes.Buffer
	a, _ := WriteContextArchive(&want, req.ContextDir, req.Source.CommitTime)
	if !bytes.Equal(fake.Object("relay-sources", "relay/"+strings.TrimPrefix(a.Digest, "sha256:")+".tar.gz"), want.Bytes()) {
		t.Fatal("the uploaded object is not the context archive")
	}
	if !strings.Contains(logs.String(), "Phase complete: POST_BUILD") {
		t.Fatalf("CloudWatch log not streamed:\n%s", logs.String())
	}
}

func TestCodeBuildFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(f *testutil.CodeBuildFake)
		cancel bool
		want   []string
	}{
		{"build fails", func(f *testutil.CodeBuildFake) { f.Fail = true }, false, []string{"ended FAILED", "exit code: 2", "BUILD: Error while executing command", "batch-get-builds", "console.aws.amazon.com"}},
		{"build times out", func(f *testutil.CodeBuildFake) { f.TimeoutRun = true }, false, []string{"ended TIMED_OUT"}},
		{"cancelled", func(f *testutil.CodeBuildFake) { f.Hang = true }, true, []string{"cancelled", "context canceled"}},
		{"expired credentials", func(f *testutil.CodeBuildFake) { f.Expired = true }, false, []string{"ExpiredTokenException", "expired or invalid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			fake, cb, repo, _ := codeBuildFixture(t, &logs)
			tc.setup(fake)
			remoteFailure(t, func(ctx context.Context) error {
				_, err := cb.Build(ctx, onePlatform()(request(repo, filesImage())))
				return err
			}, func(f func(context.Context, time.Duration) error) { cb.o.Sleep = f },
				func() bool { return len(fake.Starts()) > 0 },
				func() bool { return strings.Contains(strings.Join(fake.Calls(), " "), "StopBuild") }, tc.cancel, tc.want...)
		})
	}
}

func TestCodeBuildCheck(t *testing.T) {
	var logs bytes.Buffer
	fake, cb, _, _ := codeBuildFixture(t, &logs)
	if note, err := cb.Check(context.Background()); err != nil || !strings.Contains(note, "relay-images") {
		t.Fatalf("check: %q %v", note, err)
	}
	cb.o.Project = "missing"
	if _, err := cb.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "no project missing") {
		t.Fatalf("missing project: %v", err)
	}
	for _, c := range fake.Calls() {
		if c != "BatchGetProjects" && !strings.HasPrefix(c, "HEAD ") {
			t.Errorf("the check called %s", c)
		}
	}
}
