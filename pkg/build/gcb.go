package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/oauth2"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/pkg/oci"
)

// GCBOptions configure the Google Cloud Build builder.
type GCBOptions struct {
	Project, Location string // location default "global"
	// Bucket receives the context archive (gs://BUCKET/relay/<digest>.tar.gz).
	Bucket string
	// Tokens are the workload's application default credentials (metadata server,
	// workload identity federation); nothing is read from relay's config.
	Tokens oauth2.TokenSource
	// Endpoints of Cloud Build, Cloud Storage and Cloud Logging (defaults: googleapis.com;
	// Private Service Connect and tests set others).
	CloudBuildEndpoint, StorageEndpoint, LoggingEndpoint, ResourceManagerEndpoint string
	Dockerfile                                                                    string
	BuildArgs                                                                     map[string]string
	Target                                                                        string
	Timeout                                                                       time.Duration // default 2h
	PollInterval                                                                  time.Duration // default 5s
	Client                                                                        *oci.Client
	HTTP                                                                          *http.Client
	Retrier                                                                       *httpx.Retrier // the retry layer HTTP includes; nil: one is added
	Logger                                                                        *slog.Logger
	Sleep                                                                         func(context.Context, time.Duration) error
}

// GCB builds with Google Cloud Build: the context archive goes to a Cloud Storage object, one
// build per platform runs `docker build --platform` and pushes, its log is read from Cloud
// Logging (never the logs bucket: a build that succeeded is never reported failed because its
// log could not be read), a stopped relay cancels the build, and the digest comes from the
// build's results.
type GCB struct{ o GCBOptions }

// NewGCB checks the options.
func NewGCB(o GCBOptions) (*GCB, error) {
	if o.Project == "" || o.Bucket == "" {
		return nil, errors.New("gcb builder: project and bucket are required")
	}
	if o.Tokens == nil {
		return nil, errors.New("gcb builder: no Google credentials (application default credentials)")
	}
	if o.Client == nil {
		return nil, errors.New("gcb builder: no registry client")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
		*s = strings.TrimRight(*s, "/")
	}
	def(&o.Location, "global")
	def(&o.CloudBuildEndpoint, "https://cloudbuild.googleapis.com")
	def(&o.StorageEndpoint, "https://storage.googleapis.com")
	def(&o.LoggingEndpoint, "https://logging.googleapis.com")
	def(&o.ResourceManagerEndpoint, "https://cloudresourcemanager.googleapis.com")
	def(&o.Dockerfile, "Dockerfile")
	remoteDefaults(&o.Timeout, &o.PollInterval, &o.Logger, &o.Sleep)
	o.HTTP = retrying(o.HTTP, o.Retrier, o.Logger, o.Sleep, "Google API", o.CloudBuildEndpoint, o.StorageEndpoint, o.LoggingEndpoint, o.ResourceManagerEndpoint)
	return &GCB{o: o}, nil
}

// Name implements Builder.
func (g *GCB) Name() string { return "gcb" }

// Build implements Builder.
func (g *GCB) Build(ctx context.Context, req Request) (*Result, error) {
	var archive bytes.Buffer
	ca, err := WriteContextArchive(&archive, req.ContextDir, req.Source.CommitTime)
	if err != nil {
		return nil, err
	}
	object := "relay/" + strings.TrimPrefix(ca.Digest, "sha256:") + ".tar.gz"
	var obj struct {
		Generation string `json:"generation"`
	}
	up := fmt.Sprintf("%s/upload/storage/v1/b/%s/o?uploadType=media&name=%s", g.o.StorageEndpoint, url.PathEscape(g.o.Bucket), url.QueryEscape(object))
	if err := g.call(ctx, http.MethodPost, up, "application/gzip", archive.Bytes(), &obj); err != nil {
		return nil, fmt.Errorf("gcb: uploading the build context to gs://%s/%s: %w", g.o.Bucket, object, err)
	}
	g.o.Logger.Info("build context uploaded", "builder", "gcb", "object", "gs://"+g.o.Bucket+"/"+object, "bytes", ca.Size)

	return buildRemote(ctx, g.o.Client, req, "gcb", ca.Digest, func(ctx context.Context, plat *v1.Platform, tag string, log *bytes.Buffer) (string, string, error) {
		return g.build(ctx, req, object, obj.Generation, plat, tag, log)
	})
}

type gcbBuild struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	LogURL  string `json:"logUrl"`
	Results struct {
		Images []struct{ Name, Digest string } `json:"images"`
	} `json:"results"`
	FailureInfo  struct{ Type, Detail string } `json:"failureInfo"`
	StatusDetail string                        `json:"statusDetail"`
}

func (g *GCB) build(ctx context.Context, req Request, object, generation string, plat *v1.Platform, tag string, log *bytes.Buffer) (string, string, error) {
	image := req.Repository.Tag(tag).String()
	dockerfile, buildArgs, target := dockerSettings(g.o.Dockerfile, g.o.BuildArgs, g.o.Target, req.Image)
	args := []string{"build", "--platform", plat.String(), "-f", dockerfile, "-t", image}
	for _, k := range sortedKeys(buildArgs) {
		args = append(args, "--build-arg", k+"="+buildArgs[k])
	}
	if target != "" {
		args = append(args, "--target", target)
	}
	args = append(args, ".")
	src := map[string]any{"bucket": g.o.Bucket, "object": object}
	if generation != "" {
		src["generation"] = generation
	}
	body := map[string]any{
		"source":  map[string]any{"storageSource": src},
		"steps":   []map[string]any{{"name": "gcr.io/cloud-builders/docker", "args": args, "env": []string{"DOCKER_BUILDKIT=1"}}},
		"images":  []string{image},
		"timeout": fmt.Sprintf("%ds", int(g.o.Timeout.Seconds())),
		// Cloud Logging only: no logs bucket whose access a build's outcome could hinge on.
		"options": map[string]any{"logging": "CLOUD_LOGGING_ONLY"},
		"tags":    []string{"relay"},
	}
	b, _ := json.Marshal(body)
	var op struct {
		Name     string `json:"name"`
		Metadata struct {
			Build gcbBuild `json:"build"`
		} `json:"metadata"`
	}
	base := fmt.Sprintf("%s/v1/projects/%s/locations/%s/builds", g.o.CloudBuildEndpoint, g.o.Project, g.o.Location)
	if err := g.call(ctx, http.MethodPost, base, "application/json", b, &op); err != nil {
		return "", "", fmt.Errorf("gcb: creating the %s build: %w", plat, err)
	}
	id := op.Metadata.Build.ID
	if id == "" {
		return "", "", errors.New("gcb: the create operation names no build")
	}
	g.o.Logger.Info("build run scheduled", "builder", "gcb", "run_id", id, "platform", plat.String())
	lf := &gcbLogs{g: g, id: id, out: log}
	var bl gcbBuild
	for {
		if err := g.o.Sleep(ctx, g.o.PollInterval); err != nil {
			g.cancel(ctx, base, id)
			return "", "", fmt.Errorf("gcb: build %s cancelled: %w", id, err)
		}
		if err := g.call(ctx, http.MethodGet, base+"/"+id, "", nil, &bl); err != nil {
			if ctx.Err() != nil {
				g.cancel(ctx, base, id)
				return "", "", fmt.Errorf("gcb: build %s cancelled: %w", id, ctx.Err())
			}
			return "", "", fmt.Errorf("gcb: build %s: %w", id, err)
		}
		lf.poll(ctx)
		switch bl.Status {
		case "STATUS_UNKNOWN", "PENDING", "QUEUED", "WORKING", "":
			continue
		case "SUCCESS":
			lf.poll(ctx)
			for _, im := range bl.Results.Images {
				if im.Name == image && im.Digest != "" {
					g.o.Logger.Info("build run succeeded", "builder", "gcb", "run_id", id, "platform", plat.String(), "digest", im.Digest)
					return id, im.Digest, nil
				}
			}
			return "", "", fmt.Errorf("gcb: build %s succeeded but reports no pushed image %s", id, image)
		default: // FAILURE, INTERNAL_ERROR, TIMEOUT, CANCELLED, EXPIRED
			lf.poll(ctx)
			tail := lf.tail(30)
			if bl.FailureInfo.Detail != "" {
				tail = append(tail, bl.FailureInfo.Type+": "+bl.FailureInfo.Detail)
			}
			hint := "full log: gcloud builds log " + id + " --project " + g.o.Project
			if bl.LogURL != "" {
				hint += " (" + bl.LogURL + ")"
			}
			return "", "", &RemoteBuildError{Builder: "gcb", RunID: id, Status: bl.Status, Tail: tail, Hint: hint}
		}
	}
}

func (g *GCB) cancel(ctx context.Context, base, id string) {
	ctx, done := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer done()
	if err := g.call(ctx, http.MethodPost, base+"/"+id+":cancel", "application/json", []byte(`{}`), nil); err != nil {
		g.o.Logger.Warn("cancelling the build failed", "builder", "gcb", "run_id", id, "error", err.Error())
		return
	}
	g.o.Logger.Info("build run cancelled", "builder", "gcb", "run_id", id)
}

// gcbLogs reads a build's log lines from Cloud Logging as they arrive. A logging error is
// logged once and otherwise ignored: the build's status decides its outcome.
type gcbLogs struct {
	g      *GCB
	id     string
	out    *bytes.Buffer
	seen   map[string]bool
	since  string
	lines  []string
	warned bool
}

func (l *gcbLogs) poll(ctx context.Context) {
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	filter := fmt.Sprintf(`resource.type="build" AND resource.labels.build_id="%s"`, l.id)
	if l.since != "" {
		filter += fmt.Sprintf(` AND timestamp>="%s"`, l.since)
	}
	token := ""
	for {
		body, _ := json.Marshal(map[string]any{"resourceNames": []string{"projects/" + l.g.o.Project}, "filter": filter, "orderBy": "timestamp asc", "pageSize": 1000, "pageToken": token})
		var out struct {
			Entries []struct {
				InsertID    string `json:"insertId"`
				Timestamp   string `json:"timestamp"`
				TextPayload string `json:"textPayload"`
			} `json:"entries"`
			Next string `json:"nextPageToken"`
		}
		if err := l.g.call(ctx, http.MethodPost, l.g.o.LoggingEndpoint+"/v2/entries:list", "application/json", body, &out); err != nil {
			if !l.warned {
				l.warned = true
				l.g.o.Logger.Warn("cannot read the build log from Cloud Logging; the build's status still decides", "builder", "gcb", "run_id", l.id, "error", err.Error(),
					"fix", "grant the identity roles/logging.viewer to see build logs in relay's log")
			}
			return
		}
		for _, e := range out.Entries {
			if l.seen[e.InsertID] {
				continue
			}
			l.seen[e.InsertID], l.since = true, e.Timestamp
			line := strings.TrimRight(e.TextPayload, "\n")
			l.lines = append(l.lines, line)
			l.out.WriteString(line + "\n")
			l.g.o.Logger.Info("build log", "builder", "gcb", "run_id", l.id, "line", line)
		}
		if out.Next == "" {
			return
		}
		token = out.Next
	}
}

func (l *gcbLogs) tail(n int) []string {
	if len(l.lines) > n {
		return append([]string(nil), l.lines[len(l.lines)-n:]...)
	}
	return append([]string(nil), l.lines...)
}

// call makes one Google API request with a token (the retry layer under it waits out 429
// and 5xx); a 401 retries once with the token source asked again.
func (g *GCB) call(ctx context.Context, method, u, ctype string, body []byte, out any) error {
	fresh := false
	for {
		tok, err := g.o.Tokens.Token()
		if err != nil {
			return fmt.Errorf("Google credentials: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			return err
		}
		tok.SetAuthHeader(req)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := g.o.HTTP.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		switch {
		case resp.StatusCode/100 == 2:
			if out != nil && len(b) > 0 {
				return json.Unmarshal(b, out)
			}
			return nil
		case resp.StatusCode == http.StatusUnauthorized && !fresh:
			fresh = true
			continue
		}
		var e struct {
			Error struct {
				Code            int
				Message, Status string
			} `json:"error"`
		}
		json.Unmarshal(b, &e)
		msg := fmt.Sprintf("%s %s: %d %s %s", method, redactQuery(u), resp.StatusCode, e.Error.Status, e.Error.Message)
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			msg += " (the Google credentials were rejected twice: check the workload identity or service account)"
		case http.StatusForbidden:
			msg += " (the identity needs roles/cloudbuild.builds.editor on the project and roles/storage.objectCreator on the bucket)"
		}
		return errors.New(msg)
	}
}

func redactQuery(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

// gcbPermissions are what a build needs of the project, and of the bucket.
var (
	gcbProjectPermissions = []string{"cloudbuild.builds.create", "cloudbuild.builds.get", "cloudbuild.builds.update"}
	gcbBucketPermissions  = []string{"storage.objects.create"}
)

// Check says, reading only, whether the identity may run builds: the projects' and the
// bucket's testIamPermissions answer which of the needed permissions it holds.
func (g *GCB) Check(ctx context.Context) (string, error) {
	var proj struct {
		Permissions []string `json:"permissions"`
	}
	body, _ := json.Marshal(map[string]any{"permissions": gcbProjectPermissions})
	if err := g.call(ctx, http.MethodPost, fmt.Sprintf("%s/v1/projects/%s:testIamPermissions", g.o.ResourceManagerEndpoint, g.o.Project), "application/json", body, &proj); err != nil {
		return "", err
	}
	var bucket struct {
		Permissions []string `json:"permissions"`
	}
	q := url.Values{"permissions": gcbBucketPermissions}
	if err := g.call(ctx, http.MethodGet, fmt.Sprintf("%s/storage/v1/b/%s/iam/testPermissions?%s", g.o.StorageEndpoint, url.PathEscape(g.o.Bucket), q.Encode()), "", nil, &bucket); err != nil {
		return "", err
	}
	var missing []string
	for _, want := range gcbProjectPermissions {
		if !contains(proj.Permissions, want) {
			missing = append(missing, want+" on project "+g.o.Project)
		}
	}
	for _, want := range gcbBucketPermissions {
		if !contains(bucket.Permissions, want) {
			missing = append(missing, want+" on bucket "+g.o.Bucket)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("the identity lacks %s: grant roles/cloudbuild.builds.editor on the project and roles/storage.objectCreator on the bucket", strings.Join(missing, ", "))
	}
	return "the identity may create, read and cancel builds in " + g.o.Project + " and upload to gs://" + g.o.Bucket, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
