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
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/pkg/oci"
)

// acrAPIVersion is the ARM API of ACR Tasks' runs (scheduleRun, runs, listLogSasUrl).
const acrAPIVersion = "2019-06-01-preview"

// ACROptions configure the ACR Tasks builder.
type ACROptions struct {
	SubscriptionID, ResourceGroup string
	// Registry is the registry's resource name (NAME of NAME.azurecr.io).
	Registry string
	// Credential gets ARM tokens: workload or managed identity (azidentity); no secrets.
	Credential azcore.TokenCredential
	// ARMEndpoint is https://management.azure.com unless a sovereign cloud or a test says.
	ARMEndpoint string
	Dockerfile  string // relative to the context (default Dockerfile)
	BuildArgs   map[string]string
	Target      string
	// Timeout of each run (default 2h; ACR's own default of one hour stops long builds).
	Timeout      time.Duration
	PollInterval time.Duration // default 5s
	Client       *oci.Client   // assembles the index of a multi-platform build
	HTTP         *http.Client
	Retrier      *httpx.Retrier // the retry layer HTTP includes (relay's chain); nil: one is added
	Logger       *slog.Logger
	Sleep        func(context.Context, time.Duration) error
}

// ACR builds with ACR Tasks' quick runs: the context is packed (deterministically, honouring
// .dockerignore) and uploaded where ACR says, one Docker build run per platform is
// scheduled, polled and its log streamed, and the digest comes from the run's output images.
// relay assembles the index of a multi-platform build itself.
type ACR struct{ o ACROptions }

// NewACR checks the options.
func NewACR(o ACROptions) (*ACR, error) {
	if o.SubscriptionID == "" || o.ResourceGroup == "" || o.Registry == "" {
		return nil, errors.New("acr builder: subscription, resource group and registry are required")
	}
	if o.Credential == nil {
		return nil, errors.New("acr builder: no Azure credential (workload or managed identity)")
	}
	if o.Client == nil {
		return nil, errors.New("acr builder: no registry client")
	}
	if o.ARMEndpoint == "" {
		o.ARMEndpoint = "https://management.azure.com"
	}
	o.ARMEndpoint = strings.TrimRight(o.ARMEndpoint, "/")
	if o.Dockerfile == "" {
		o.Dockerfile = "Dockerfile"
	}
	remoteDefaults(&o.Timeout, &o.PollInterval, &o.Logger, &o.Sleep)
	if o.Timeout < 5*time.Minute || o.Timeout > 8*time.Hour {
		return nil, fmt.Errorf("acr builder: timeout %s is outside ACR's 5m..8h", o.Timeout)
	}
	o.HTTP = retrying(o.HTTP, o.Retrier, o.Logger, o.Sleep, "ACR Tasks API", o.ARMEndpoint)
	return &ACR{o: o}, nil
}

// Name implements Builder.
func (a *ACR) Name() string { return "acr" }

func (a *ACR) registryPath() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.ContainerRegistry/registries/%s", a.o.SubscriptionID, a.o.ResourceGroup, a.o.Registry)
}

// Build implements Builder.
func (a *ACR) Build(ctx context.Context, req Request) (*Result, error) {
	var archive bytes.Buffer
	ca, err := WriteContextArchive(&archive, req.ContextDir, req.Source.CommitTime)
	if err != nil {
		return nil, err
	}
	var up struct {
		UploadURL    string `json:"uploadUrl"`
		RelativePath string `json:"relativePath"`
	}
	if err := a.arm(ctx, http.MethodPost, a.registryPath()+"/listBuildSourceUploadUrl", nil, &up); err != nil {
		return nil, fmt.Errorf("acr: source upload location: %w", err)
	}
	if err := a.upload(ctx, up.UploadURL, archive.Bytes()); err != nil {
		return nil, err
	}
	a.o.Logger.Info("build context uploaded", "builder", "acr", "digest", ca.Digest, "bytes", ca.Size, "files", ca.Files)

	return buildRemote(ctx, a.o.Client, req, "acr", ca.Digest, func(ctx context.Context, plat *v1.Platform, tag string, log *bytes.Buffer) (string, string, error) {
		return a.run(ctx, req, up.RelativePath, plat, tag, log)
	})
}

// run schedules one platform's Docker build and follows it to its end.
func (a *ACR) run(ctx context.Context, req Request, source string, plat *v1.Platform, tag string, log *bytes.Buffer) (string, string, error) {
	repoPath := req.Repository.RepositoryStr()
	dockerfile, buildArgs, target := dockerSettings(a.o.Dockerfile, a.o.BuildArgs, a.o.Target, req.Image)
	args := []map[string]any{}
	for _, k := range sortedKeys(buildArgs) { // the same request for the same inputs
		args = append(args, map[string]any{"name": k, "value": buildArgs[k], "isSecret": false})
	}
	body := map[string]any{
		"type": "DockerBuildRequest", "imageNames": []string{repoPath + ":" + tag}, "isPushEnabled": true, "noCache": false,
		"dockerFilePath": dockerfile, "sourceLocation": source, "arguments": args, "timeout": int(a.o.Timeout.Seconds()),
		"platform": map[string]any{"os": strings.ToUpper(plat.OS[:1]) + plat.OS[1:], "architecture": plat.Architecture, "variant": plat.Variant},
	}
	if target != "" {
		body["target"] = target
	}
	var run acrRunResource
	if err := a.arm(ctx, http.MethodPost, a.registryPath()+"/scheduleRun", body, &run); err != nil {
		return "", "", fmt.Errorf("acr: scheduling the %s build: %w", plat, err)
	}
	id := run.Properties.RunID
	if id == "" {
		return "", "", errors.New("acr: scheduleRun returned no run id")
	}
	a.o.Logger.Info("build run scheduled", "builder", "acr", "run_id", id, "platform", plat.String())
	follower := &logFollower{a: a, runID: id, out: log}
	for {
		if err := a.o.Sleep(ctx, a.o.PollInterval); err != nil {
			a.cancel(ctx, id)
			return "", "", fmt.Errorf("acr: run %s cancelled: %w", id, err)
		}
		if err := a.arm(ctx, http.MethodGet, a.registryPath()+"/runs/"+id, nil, &run); err != nil {
			if ctx.Err() != nil {
				a.cancel(ctx, id)
				return "", "", fmt.Errorf("acr: run %s cancelled: %w", id, ctx.Err())
			}
			return "", "", fmt.Errorf("acr: run %s: %w", id, err)
		}
		follower.poll(ctx)
		switch run.Properties.Status {
		case "Queued", "Started", "Running", "":
			continue
		case "Succeeded":
			follower.poll(ctx)
			for _, im := range run.Properties.OutputImages {
				if im.Repository == repoPath && im.Tag == tag && im.Digest != "" {
					a.o.Logger.Info("build run succeeded", "builder", "acr", "run_id", id, "platform", plat.String(), "digest", im.Digest)
					return id, im.Digest, nil
				}
			}
			return "", "", fmt.Errorf("acr: run %s succeeded but reports no pushed image %s:%s", id, repoPath, tag)
		default: // Failed, Error, Timeout, Canceled
			follower.poll(ctx)
			return "", "", &RemoteBuildError{Builder: "acr", RunID: id, Status: run.Properties.Status, Tail: follower.tail(30),
				Hint: fmt.Sprintf("full log: az acr task logs -r %s --run-id %s", a.o.Registry, id)}
		}
	}
}

type acrRunResource struct {
	Properties struct {
		RunID        string `json:"runId"`
		Status       string `json:"status"`
		OutputImages []struct {
			Registry, Repository, Tag, Digest string
		} `json:"outputImages"`
	} `json:"properties"`
}

// cancel asks ACR to stop a run; it runs on its own deadline since ctx may be what ended.
func (a *ACR) cancel(ctx context.Context, id string) {
	ctx, done := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer done()
	if err := a.arm(ctx, http.MethodPost, a.registryPath()+"/runs/"+id+"/cancel", nil, nil); err != nil {
		a.o.Logger.Warn("cancelling the build run failed", "builder", "acr", "run_id", id, "error", err.Error())
		return
	}
	a.o.Logger.Info("build run cancelled", "builder", "acr", "run_id", id)
}

// RemoteBuildError is a cloud build that ended without an image, with its log's last lines.
type RemoteBuildError struct {
	Builder, RunID, Status, Hint string
	Tail                         []string
}

func (e *RemoteBuildError) Error() string {
	return fmt.Sprintf("%s run %s ended %s; %s; last log lines:\n  %s", e.Builder, e.RunID, e.Status, e.Hint, strings.Join(e.Tail, "\n  "))
}

// logFollower streams a run's log (an append blob behind a SAS link) a range at a time.
type logFollower struct {
	a     *ACR
	runID string
	link  string
	off   int64
	out   *bytes.Buffer
	part  string
	lines []string
}

func (f *logFollower) poll(ctx context.Context) {
	if f.link == "" {
		var out struct {
			LogLink string `json:"logLink"`
		}
		if err := f.a.arm(ctx, http.MethodPost, f.a.registryPath()+"/runs/"+f.runID+"/listLogSasUrl", nil, &out); err != nil || out.LogLink == "" {
			return // no log yet; the status decides the outcome, never the log
		}
		f.link = out.LogLink
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.link, nil)
	if err != nil {
		return
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", f.off))
	resp, err := f.a.o.HTTP.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return // 416: nothing new
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	f.off += int64(len(b))
	f.out.Write(b)
	text := f.part + string(b)
	lines := strings.Split(text, "\n")
	f.part = lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		l = strings.TrimRight(l, "\r")
		f.lines = append(f.lines, l)
		f.a.o.Logger.Info("build log", "builder", "acr", "run_id", f.runID, "line", l)
	}
}

func (f *logFollower) tail(n int) []string {
	l := f.lines
	if f.part != "" {
		l = append(l, f.part)
	}
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return l
}

// upload puts the context where ACR said (a blob SAS URL).
func (a *ACR) upload(ctx context.Context, url string, b []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("x-ms-blob-type", "BlockBlob")
	req.ContentLength = int64(len(b))
	resp, err := a.o.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("acr: uploading the build context: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("acr: uploading the build context: %d", resp.StatusCode)
	}
	return nil
}

// arm calls the ARM API with a token of the credential (the retry layer under it waits out
// 429 and 5xx); a 401 gets one fresh token, since tokens expire mid-build.
func (a *ACR) arm(ctx context.Context, method, path string, body, out any) error {
	return a.armVersion(ctx, method, path, acrAPIVersion, body, out)
}

func (a *ACR) armVersion(ctx context.Context, method, path, version string, body, out any) error {
	fresh := false
	for {
		tok, err := a.o.Credential.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{a.o.ARMEndpoint + "/.default"}})
		if err != nil {
			return fmt.Errorf("Azure credential: %w", err)
		}
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, a.o.ARMEndpoint+path+"?api-version="+version, r)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := a.o.HTTP.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusNoContent:
			if out != nil && len(b) > 0 {
				return json.Unmarshal(b, out)
			}
			return nil
		case resp.StatusCode == http.StatusUnauthorized && !fresh:
			fresh = true // ask the credential again: a token can expire during a long build
			continue
		}
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.Unmarshal(b, &e)
		msg := fmt.Sprintf("%s %s: %d %s %s", method, path, resp.StatusCode, e.Error.Code, e.Error.Message)
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			msg += " (the Azure token was rejected twice: is the identity's federation or managed identity configured?)"
		case http.StatusForbidden:
			msg += " (the identity needs the Contributor role, or Microsoft.ContainerRegistry/registries/scheduleRun/action, listBuildSourceUploadUrl/action and runs/read, on the registry)"
		}
		return errors.New(msg)
	}
}

// acrActions are what a run needs of the registry (the Contributor role has them all).
var acrActions = []string{
	"Microsoft.ContainerRegistry/registries/listBuildSourceUploadUrl/action",
	"Microsoft.ContainerRegistry/registries/scheduleRun/action",
	"Microsoft.ContainerRegistry/registries/runs/read",
	"Microsoft.ContainerRegistry/registries/runs/listLogSasUrl/action",
	"Microsoft.ContainerRegistry/registries/runs/cancel/action",
}

// Check says, reading only, whether the identity may run builds on the registry: ARM's
// permissions API lists what its role assignments allow there.
func (a *ACR) Check(ctx context.Context) (string, error) {
	var out struct {
		Value []struct {
			Actions    []string `json:"actions"`
			NotActions []string `json:"notActions"`
		} `json:"value"`
	}
	if err := a.armVersion(ctx, http.MethodGet, a.registryPath()+"/providers/Microsoft.Authorization/permissions", "2022-04-01", nil, &out); err != nil {
		return "", err
	}
	var missing []string
	for _, want := range acrActions {
		ok := false
		for _, p := range out.Value {
			if matchesAction(p.Actions, want) && !matchesAction(p.NotActions, want) {
				ok = true
			}
		}
		if !ok {
			missing = append(missing, want)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("the identity may not %s on registry %s: assign it the Contributor role there (or a role with these actions)", strings.Join(missing, ", "), a.o.Registry)
	}
	return "the identity may upload sources, schedule, read and cancel runs on " + a.o.Registry, nil
}

// matchesAction applies ARM's action wildcards ("*", "Microsoft.ContainerRegistry/*").
func matchesAction(patterns []string, action string) bool {
	for _, p := range patterns {
		if p == "*" || strings.EqualFold(p, action) || (strings.HasSuffix(p, "*") && strings.HasPrefix(strings.ToLower(action), strings.ToLower(strings.TrimSuffix(p, "*")))) {
			return true
		}
	}
	return false
}
