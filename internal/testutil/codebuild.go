package testutil

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// CodeBuildFake is AWS CodeBuild's JSON API (StartBuild, BatchGetBuilds, StopBuild),
// CloudWatch Logs' GetLogEvents and S3's PutObject (path-style), each request's SigV4
// signature checked with FakeAWSCredentials. A build is IN_PROGRESS at its first poll and
// is then built by Build: SUCCEEDED (CodeBuild reports no digest) or FAILED.
type CodeBuildFake struct {
	URL   string
	Build RemoteBuildFunc
	// Faults: Throttle answers the next calls ThrottlingException (the SDK retries);
	// Expired answers ExpiredTokenException; Fail, Hang and TimeoutRun end builds FAILED,
	// never, or TIMED_OUT.
	Throttle               int
	Expired                bool
	Fail, Hang, TimeoutRun bool

	mu      sync.Mutex
	objects map[string][]byte
	builds  map[string]*cbFakeBuild
	starts  []map[string]any
	calls   []string
	dir     string
}

type cbFakeBuild struct {
	id, status, source, image, platform string
	logs                                []string
	phases                              []map[string]any
}

// StartCodeBuild serves the fake.
func StartCodeBuild(t testing.TB, build RemoteBuildFunc) *CodeBuildFake {
	t.Helper()
	f := &CodeBuildFake{Build: build, objects: map[string][]byte{}, builds: map[string]*cbFakeBuild{}, dir: t.TempDir()}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// Starts are the StartBuild inputs received.
func (f *CodeBuildFake) Starts() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.starts...)
}

// Calls lists the operations called, in order.
func (f *CodeBuildFake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Object is an uploaded S3 object.
func (f *CodeBuildFake) Object(bucket, key string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.objects[bucket+"/"+key]
}

func (f *CodeBuildFake) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	target := r.Header.Get("X-Amz-Target")
	op, service := target, "s3"
	switch {
	case strings.HasPrefix(target, "CodeBuild_20161006."):
		op, service = strings.TrimPrefix(target, "CodeBuild_20161006."), "codebuild"
	case strings.HasPrefix(target, "Logs_20140328."):
		op, service = strings.TrimPrefix(target, "Logs_20140328."), "logs"
	default:
		op = r.Method + " " + r.URL.Path
	}
	f.calls = append(f.calls, op)
	fail := func(code int, typ, msg string) {
		if service == "s3" {
			w.WriteHeader(code)
			fmt.Fprintf(w, "<Error><Code>%s</Code><Message>%s</Message></Error>", typ, msg)
			return
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
	}
	if _, err := CheckSigV4(r, body, service, FakeAWSCredentials); err != nil {
		fail(http.StatusForbidden, "InvalidSignatureException", err.Error())
		return
	}
	if f.Expired {
		fail(http.StatusBadRequest, "ExpiredTokenException", "The security token included in the request is expired")
		return
	}
	if f.Throttle > 0 && service == "codebuild" {
		f.Throttle--
		fail(http.StatusBadRequest, "ThrottlingException", "Rate exceeded")
		return
	}
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		json.NewEncoder(w).Encode(v)
	}
	var in map[string]any
	json.Unmarshal(body, &in)
	switch op {
	case "StartBuild":
		f.starts = append(f.starts, in)
		src, _ := in["sourceLocationOverride"].(string)
		if in["sourceTypeOverride"] != "S3" || f.objects[src] == nil || in["privilegedModeOverride"] != true || in["buildspecOverride"] == nil {
			fail(http.StatusBadRequest, "InvalidInputException", "an S3 source that exists, privileged mode and a buildspec are required")
			return
		}
		b := &cbFakeBuild{id: fmt.Sprintf("relay-images:7f3c2a10-%04d-4b5e-9d1a-2c3b4a5d6e7f", len(f.builds)+1), status: "IN_PROGRESS", source: src}
		for _, e := range in["environmentVariablesOverride"].([]any) {
			ev := e.(map[string]any)
			switch ev["name"] {
			case "IMAGE":
				b.image = fmt.Sprint(ev["value"])
			case "PLATFORM":
				b.platform = fmt.Sprint(ev["value"])
			}
		}
		f.builds[b.id] = b
		reply(map[string]any{"build": f.buildJSON(b)})
	case "BatchGetBuilds":
		var out []any
		for _, id := range in["ids"].([]any) {
			if b := f.builds[fmt.Sprint(id)]; b != nil {
				f.advance(r.Context(), b)
				out = append(out, f.buildJSON(b))
			}
		}
		reply(map[string]any{"builds": out, "buildsNotFound": []string{}})
	case "StopBuild":
		b := f.builds[fmt.Sprint(in["id"])]
		if b == nil {
			fail(http.StatusBadRequest, "ResourceNotFoundException", "Build not found")
			return
		}
		b.status = "STOPPED"
		reply(map[string]any{"build": f.buildJSON(b)})
	case "BatchGetProjects":
		var found []any
		for _, n := range in["names"].([]any) {
			if n == "relay-images" {
				found = append(found, map[string]any{"name": n, "arn": "arn:aws:codebuild:us-east-1:111122223333:project/relay-images",
					"environment": map[string]any{"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "privilegedMode": true}})
			}
		}
		reply(map[string]any{"projects": found, "projectsNotFound": []string{}})
	case "GetLogEvents":
		var b *cbFakeBuild
		for _, x := range f.builds {
			if strings.HasSuffix(x.id, fmt.Sprint(in["logStreamName"])) {
				b = x
			}
		}
		if b == nil {
			fail(http.StatusBadRequest, "ResourceNotFoundException", "The specified log stream does not exist.")
			return
		}
		from := 0
		if tok, _ := in["nextToken"].(string); tok != "" {
			fmt.Sscanf(tok, "f/%d", &from)
		}
		var events []map[string]any
		for i := from; i < len(b.logs); i++ {
			events = append(events, map[string]any{"timestamp": 1795300000000 + int64(i), "message": b.logs[i] + "\n", "ingestionTime": 1795300000100 + int64(i)})
		}
		reply(map[string]any{"events": events, "nextForwardToken": fmt.Sprintf("f/%d", len(b.logs)), "nextBackwardToken": "b/0"})
	default:
		if r.Method == http.MethodHead && strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0 {
			if strings.Trim(r.URL.Path, "/") != "relay-sources" {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		if r.Method == http.MethodPut {
			f.objects[strings.TrimPrefix(r.URL.Path, "/")] = body
			w.Header().Set("ETag", `"d41d8cd98f00b204e9800998ecf8427e"`)
			w.WriteHeader(http.StatusOK)
			return
		}
		fail(http.StatusBadRequest, "UnknownOperationException", op)
	}
}

func (f *CodeBuildFake) advance(ctx context.Context, b *cbFakeBuild) {
	switch {
	case b.status != "IN_PROGRESS" || f.Hang:
	case len(b.logs) == 0:
		b.logs = append(b.logs, "[Container] 2026/11/22 09:00:00 Running on CodeBuild On-demand", "[Container] 2026/11/22 09:00:01 Phase is DOWNLOAD_SOURCE")
	case f.TimeoutRun:
		b.status = "TIMED_OUT"
		b.logs = append(b.logs, "[Container] Build timed out")
	case f.Fail:
		b.status = "FAILED"
		b.logs = append(b.logs, "#7 [2/2] RUN make", "#7 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2", "[Container] 2026/11/22 09:00:09 Command did not exit successfully docker build exit status 1")
		b.phases = []map[string]any{{"phaseType": "BUILD", "phaseStatus": "FAILED", "contexts": []map[string]any{{"statusCode": "COMMAND_EXECUTION_ERROR", "message": "Error while executing command: docker build. Reason: exit status 1"}}}}
	default:
		dir := filepath.Join(f.dir, strings.ReplaceAll(b.id, ":", "_"))
		if err := untarGz(f.objects[b.source], dir); err != nil {
			b.status = "FAULT"
			return
		}
		_, log, err := f.Build(ctx, dir, b.platform, b.image)
		for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
			b.logs = append(b.logs, l)
		}
		if err != nil {
			b.status = "FAILED"
			b.logs = append(b.logs, "ERROR: "+err.Error())
			return
		}
		b.status = "SUCCEEDED"
		b.logs = append(b.logs, "[Container] 2026/11/22 09:00:12 Phase complete: POST_BUILD State: SUCCEEDED")
	}
}

func (f *CodeBuildFake) buildJSON(b *cbFakeBuild) map[string]any {
	stream := b.id[strings.Index(b.id, ":")+1:]
	return map[string]any{"id": b.id, "arn": "arn:aws:codebuild:us-east-1:111122223333:build/" + b.id, "buildStatus": b.status, "projectName": "relay-images",
		"currentPhase": "COMPLETED", "phases": b.phases,
		"logs": map[string]any{"groupName": "/aws/codebuild/relay-images", "streamName": stream,
			"deepLink": "https://console.aws.amazon.com/cloudwatch/home?region=us-east-1#logEvent:group=/aws/codebuild/relay-images;stream=" + stream}}
}
