package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/codebuild"
	cbtypes "github.com/aws/aws-sdk-go-v2/service/codebuild/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/relaydev/relay/pkg/oci"
)

// CodeBuildOptions configure the AWS CodeBuild builder.
type CodeBuildOptions struct {
	// Project is an existing CodeBuild project (its service role may push to the registry
	// and read the bucket; its environment runs in privileged mode for Docker).
	Project string
	// Bucket receives the context archive (s3://BUCKET/relay/<digest>.tar.gz).
	Bucket string
	// AWS is the SDK configuration from the default chain (environment, web identity,
	// container credentials, instance role); no key is read from relay's config.
	AWS                aws.Config
	S3Options          []func(*s3.Options) // tests use path-style addressing
	Dockerfile, Target string
	BuildArgs          map[string]string
	Timeout            time.Duration // default 2h (CodeBuild's limit is 36h)
	PollInterval       time.Duration // default 5s
	Client             *oci.Client
	Logger             *slog.Logger
	Sleep              func(context.Context, time.Duration) error
}

// CodeBuild builds with AWS CodeBuild: the context archive goes to S3, one build per
// platform runs a buildspec override (docker build --platform, docker push), its CloudWatch
// log is streamed, a stopped relay stops the build, and the pushed image's digest is read
// from the registry right after the build (CodeBuild does not report it).
type CodeBuild struct {
	o    CodeBuildOptions
	cb   *codebuild.Client
	logs *cloudwatchlogs.Client
	s3   *s3.Client
}

// NewCodeBuild checks the options.
func NewCodeBuild(o CodeBuildOptions) (*CodeBuild, error) {
	if o.Project == "" || o.Bucket == "" {
		return nil, errors.New("codebuild builder: project and bucket are required")
	}
	if o.Client == nil {
		return nil, errors.New("codebuild builder: no registry client")
	}
	if o.AWS.Region == "" {
		return nil, errors.New("codebuild builder: no AWS region (AWS_REGION, or the profile's region)")
	}
	if o.Dockerfile == "" {
		o.Dockerfile = "Dockerfile"
	}
	remoteDefaults(&o.Timeout, &o.PollInterval, &o.Logger, &o.Sleep)
	s3opts := append([]func(*s3.Options){func(so *s3.Options) {
		// A plain PUT: no aws-chunked trailer checksums an S3-compatible endpoint may not take.
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	}}, o.S3Options...)
	return &CodeBuild{o: o, cb: codebuild.NewFromConfig(o.AWS), logs: cloudwatchlogs.NewFromConfig(o.AWS), s3: s3.NewFromConfig(o.AWS, s3opts...)}, nil
}

// Name implements Builder.
func (c *CodeBuild) Name() string { return "codebuild" }

// buildspec builds and pushes $IMAGE for $PLATFORM; ECR logins use the build's role.
const buildspec = `version: 0.2
phases:
  pre_build:
    commands:
      - 'case "$IMAGE" in *.dkr.ecr.*.amazonaws.com/*) aws ecr get-login-password --region "$AWS_REGION" | docker login --username AWS --password-stdin "${IMAGE%%/*}";; esac'
  build:
    commands:
      - docker build --platform "$PLATFORM" -f "$DOCKERFILE" $TARGET_FLAG $BUILD_ARGS -t "$IMAGE" .
      - docker push "$IMAGE"
`

// Build implements Builder.
func (c *CodeBuild) Build(ctx context.Context, req Request) (*Result, error) {
	var archive bytes.Buffer
	ca, err := WriteContextArchive(&archive, req.ContextDir, req.Source.CommitTime)
	if err != nil {
		return nil, err
	}
	key := "relay/" + strings.TrimPrefix(ca.Digest, "sha256:") + ".tar.gz"
	if _, err := c.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(c.o.Bucket), Key: aws.String(key), Body: bytes.NewReader(archive.Bytes()),
		ContentLength: aws.Int64(int64(archive.Len()))}); err != nil {
		return nil, fmt.Errorf("codebuild: uploading the build context to s3://%s/%s: %w", c.o.Bucket, key, explainAWS(err))
	}
	c.o.Logger.Info("build context uploaded", "builder", "codebuild", "object", "s3://"+c.o.Bucket+"/"+key, "bytes", ca.Size)
	return buildRemote(ctx, c.o.Client, req, "codebuild", ca.Digest, func(ctx context.Context, plat *v1.Platform, tag string, log *bytes.Buffer) (string, string, error) {
		ref := req.Repository.Tag(tag)
		id, err := c.run(ctx, req, key, plat, ref.String(), log)
		if err != nil {
			return "", "", err
		}
		// CodeBuild reports no digest: resolve the tag the build pushed, at once.
		d, err := c.o.Client.TagDigest(ctx, ref)
		if err != nil || d == "" {
			return "", "", fmt.Errorf("codebuild: build %s succeeded but %s cannot be read back: %v", id, ref, err)
		}
		c.o.Logger.Info("build run succeeded", "builder", "codebuild", "run_id", id, "platform", plat.String(), "digest", d)
		return id, d, nil
	})
}

func (c *CodeBuild) run(ctx context.Context, req Request, key string, plat *v1.Platform, image string, log *bytes.Buffer) (string, error) {
	dockerfile, buildArgs, target := dockerSettings(c.o.Dockerfile, c.o.BuildArgs, c.o.Target, req.Image)
	var ba []string
	for _, k := range sortedKeys(buildArgs) {
		ba = append(ba, "--build-arg "+k+"="+buildArgs[k])
	}
	tf := ""
	if target != "" {
		tf = "--target " + target
	}
	env := []cbtypes.EnvironmentVariable{
		{Name: aws.String("IMAGE"), Value: aws.String(image), Type: cbtypes.EnvironmentVariableTypePlaintext},
		{Name: aws.String("PLATFORM"), Value: aws.String(plat.String()), Type: cbtypes.EnvironmentVariableTypePlaintext},
		{Name: aws.String("DOCKERFILE"), Value: aws.String(dockerfile), Type: cbtypes.EnvironmentVariableTypePlaintext},
		{Name: aws.String("TARGET_FLAG"), Value: aws.String(tf), Type: cbtypes.EnvironmentVariableTypePlaintext},
		{Name: aws.String("BUILD_ARGS"), Value: aws.String(strings.Join(ba, " ")), Type: cbtypes.EnvironmentVariableTypePlaintext},
	}
	out, err := c.cb.StartBuild(ctx, &codebuild.StartBuildInput{
		ProjectName: aws.String(c.o.Project), SourceTypeOverride: cbtypes.SourceTypeS3, SourceLocationOverride: aws.String(c.o.Bucket + "/" + key),
		BuildspecOverride: aws.String(buildspec), EnvironmentVariablesOverride: env, PrivilegedModeOverride: aws.Bool(true),
		TimeoutInMinutesOverride: aws.Int32(int32(c.o.Timeout.Minutes())),
	})
	if err != nil {
		return "", fmt.Errorf("codebuild: starting the %s build: %w", plat, explainAWS(err))
	}
	id := aws.ToString(out.Build.Id)
	c.o.Logger.Info("build run scheduled", "builder", "codebuild", "run_id", id, "platform", plat.String())
	lf := &cbLogs{c: c, id: id, out: log}
	for {
		if err := c.o.Sleep(ctx, c.o.PollInterval); err != nil {
			c.stop(ctx, id)
			return "", fmt.Errorf("codebuild: build %s cancelled: %w", id, err)
		}
		got, err := c.cb.BatchGetBuilds(ctx, &codebuild.BatchGetBuildsInput{Ids: []string{id}})
		if err != nil {
			if ctx.Err() != nil {
				c.stop(ctx, id)
				return "", fmt.Errorf("codebuild: build %s cancelled: %w", id, ctx.Err())
			}
			return "", fmt.Errorf("codebuild: build %s: %w", id, explainAWS(err))
		}
		if len(got.Builds) != 1 {
			return "", fmt.Errorf("codebuild: build %s not found", id)
		}
		b := got.Builds[0]
		if b.Logs != nil {
			lf.group, lf.stream, lf.link = aws.ToString(b.Logs.GroupName), aws.ToString(b.Logs.StreamName), aws.ToString(b.Logs.DeepLink)
		}
		lf.poll(ctx)
		switch b.BuildStatus {
		case cbtypes.StatusTypeInProgress, "":
			continue
		case cbtypes.StatusTypeSucceeded:
			lf.poll(ctx)
			return id, nil
		default: // FAILED, FAULT, TIMED_OUT, STOPPED
			lf.poll(ctx)
			hint := "full log: aws codebuild batch-get-builds --ids " + id
			if lf.link != "" {
				hint += " (" + lf.link + ")"
			}
			tail := lf.tail(30)
			for _, p := range b.Phases {
				if p.PhaseStatus != cbtypes.StatusTypeSucceeded && p.PhaseStatus != "" {
					for _, ctxm := range p.Contexts {
						tail = append(tail, string(p.PhaseType)+": "+aws.ToString(ctxm.Message))
					}
				}
			}
			return "", &RemoteBuildError{Builder: "codebuild", RunID: id, Status: string(b.BuildStatus), Tail: tail, Hint: hint}
		}
	}
}

func (c *CodeBuild) stop(ctx context.Context, id string) {
	ctx, done := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer done()
	if _, err := c.cb.StopBuild(ctx, &codebuild.StopBuildInput{Id: aws.String(id)}); err != nil {
		c.o.Logger.Warn("stopping the build failed", "builder", "codebuild", "run_id", id, "error", err.Error())
		return
	}
	c.o.Logger.Info("build run cancelled", "builder", "codebuild", "run_id", id)
}

// cbLogs follows a build's CloudWatch log stream; an error only costs the log.
type cbLogs struct {
	c                   *CodeBuild
	id                  string
	group, stream, link string
	next                *string
	out                 *bytes.Buffer
	lines               []string
	warned              bool
}

func (l *cbLogs) poll(ctx context.Context) {
	if l.group == "" || l.stream == "" {
		return
	}
	for {
		in := &cloudwatchlogs.GetLogEventsInput{LogGroupName: aws.String(l.group), LogStreamName: aws.String(l.stream), StartFromHead: aws.Bool(true), NextToken: l.next}
		out, err := l.c.logs.GetLogEvents(ctx, in)
		if err != nil {
			if !l.warned {
				l.warned = true
				l.c.o.Logger.Warn("cannot read the build log from CloudWatch; the build's status still decides", "builder", "codebuild", "run_id", l.id, "error", err.Error(),
					"fix", "allow logs:GetLogEvents on the project's log group")
			}
			return
		}
		for _, e := range out.Events {
			line := strings.TrimRight(aws.ToString(e.Message), "\n")
			l.lines = append(l.lines, line)
			l.out.WriteString(line + "\n")
			l.c.o.Logger.Info("build log", "builder", "codebuild", "run_id", l.id, "line", line)
		}
		same := l.next != nil && aws.ToString(out.NextForwardToken) == aws.ToString(l.next)
		l.next = out.NextForwardToken
		if same || len(out.Events) == 0 {
			return
		}
	}
}

func (l *cbLogs) tail(n int) []string {
	if len(l.lines) > n {
		return append([]string(nil), l.lines[len(l.lines)-n:]...)
	}
	return append([]string(nil), l.lines...)
}

// explainAWS adds what to do to the AWS errors a first deployment meets.
func explainAWS(err error) error {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.ErrorCode() {
	case "ExpiredTokenException", "ExpiredToken", "UnrecognizedClientException", "InvalidSignatureException":
		return fmt.Errorf("%w (the AWS credentials are expired or invalid: check the role the workload assumes)", err)
	case "AccessDeniedException", "AccessDenied":
		return fmt.Errorf("%w (the role needs codebuild:StartBuild, BatchGetBuilds and StopBuild on the project, s3:PutObject on the bucket, logs:GetLogEvents on its log group)", err)
	case "ResourceNotFoundException":
		return fmt.Errorf("%w (is builder.codebuild.project the name of an existing project in this region?)", err)
	}
	return err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Check says, reading only, whether the project exists (with privileged mode, which Docker
// needs) and the bucket answers; StartBuild's permission shows at the first build.
func (c *CodeBuild) Check(ctx context.Context) (string, error) {
	out, err := c.cb.BatchGetProjects(ctx, &codebuild.BatchGetProjectsInput{Names: []string{c.o.Project}})
	if err != nil {
		return "", fmt.Errorf("codebuild: reading project %s: %w", c.o.Project, explainAWS(err))
	}
	if len(out.Projects) != 1 {
		return "", fmt.Errorf("codebuild: no project %s in %s: create it (any source; relay overrides source and buildspec) with a service role that may push to the registry", c.o.Project, c.o.AWS.Region)
	}
	if _, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(c.o.Bucket)}); err != nil {
		return "", fmt.Errorf("codebuild: bucket %s: %w", c.o.Bucket, explainAWS(err))
	}
	return fmt.Sprintf("project %s and bucket %s found (StartBuild permission shows at the first build)", c.o.Project, c.o.Bucket), nil
}
