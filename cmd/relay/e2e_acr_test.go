//go:build integration

package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/oci"
)

// TestE2EACRRelease releases the example with builder.kind acr: relay (with the workload's
// managed identity) uploads the context to the ACR Tasks fake, whose runs build it with the
// local builder into a real registry; the digests flow through copy, sign and release, and
// relay verify accepts the result.
func TestE2EACRRelease(t *testing.T) {
	reg := testutil.Registry(t, true)
	c, _ := oci.New()
	lb, err := build.NewLocal(build.LocalOptions{Client: c, ConfigDir: t.TempDir(), Jobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	fake := testutil.StartACRTasks(t, func(ctx context.Context, dir, platform, repository, tag string) (string, string, error) {
		return buildExampleAt(ctx, lb, c, dir, platform, reg+"/"+repository+":"+tag)
	})
	releaseWithBuilder(t, reg, "builder: {kind: acr, registry: "+reg+"/build, acr: {subscription: sub-1, resource_group: rg-build, registry: relayacr, arm_endpoint: "+fake.URL+"}}",
		fake.IdentityEnv(), func() int { return len(fake.Requests()) }, fake.OnRequest)
}

// TestE2EGCBRelease is the same with builder.kind gcb: application default credentials from
// the (fake) metadata server, the context in a Cloud Storage object, the log from Cloud Logging.
func TestE2EGCBRelease(t *testing.T) {
	reg := testutil.Registry(t, true)
	c, _ := oci.New()
	lb, err := build.NewLocal(build.LocalOptions{Client: c, ConfigDir: t.TempDir(), Jobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	fake := testutil.StartCloudBuild(t, func(ctx context.Context, dir, platform, image string) (string, string, error) {
		return buildExampleAt(ctx, lb, c, dir, platform, image)
	})
	releaseWithBuilder(t, reg, "builder: {kind: gcb, registry: "+reg+"/build, gcb: {project: acme-build, bucket: acme-build-sources, endpoints: {cloudbuild: "+fake.URL+
		", storage: "+fake.URL+", logging: "+fake.URL+"}}}", fake.MetadataEnv(), func() int { return len(fake.Bodies()) }, fake.OnRequest)
}

// buildExampleAt builds the example's image from an unpacked context with the local builder,
// as a cloud builder's run would, and pushes it as image (REPOSITORY:TAG).
func buildExampleAt(ctx context.Context, lb *build.Local, c *oci.Client, dir, platform, image string) (string, string, error) {
	tag, err := name.NewTag(image)
	if err != nil {
		return "", "", err
	}
	im := build.Image{Name: "hello", Platforms: []string{platform}, Local: &build.LocalSpec{Base: "scratch", Go: &build.GoSpec{Main: ".", Binary: "/hello"}}}
	res, err := lb.Build(ctx, build.Request{Image: im, ContextDir: dir, Repository: tag.Context(), Source: build.SourceInfo{CommitTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}})
	if err != nil {
		return "", "", err
	}
	d, _ := name.NewDigest(res.Ref)
	return res.Digest, string(res.Log), c.Tag(ctx, d, tag.TagStr())
}

// releaseWithBuilder releases the example with the given builder section and environment,
// then checks one remote build ran per platform, the digests went through the pipeline,
// relay verify accepts the result and the remote log reached relay's log, and that every
// request the builder's fake got (its identity's token requests included) carried relay's
// User-Agent and the caller's traceparent.
func releaseWithBuilder(t *testing.T, reg, builder string, env []string, builds func() int, onRequest func(func(*http.Request))) {
	t.Helper()
	var hdrs headerLog
	onRequest(hdrs.add)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	env = append(env, "TRACEPARENT=00-"+traceID+"-00f067aa0ba902b7-01")
	dir := realExample(t, reg, "signing: {mode: key, key: "+testKeyFile(t)+", tlog: false}\n")
	cfgPath := filepath.Join(dir, "relay.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(cfg), "builder: {kind: local, registry: "+reg+"/build}", builder, 1)), 0o644)
	// A dry run starts no remote build: without a built state it says what to run first;
	// after the real build it predicts the rest from the build's digests.
	if d := runRelayEnv(t, dir, env, "run", "--dry-run"); d.code != exitUsage || !strings.Contains(d.stderr, "relay run --only checkout,build") || builds() != 0 {
		t.Fatalf("dry run before the build: exit %d, %d remote builds\n%s\n%s", d.code, builds(), d.stdout, d.stderr)
	}
	r := runRelayEnv(t, dir, env, "run", "--only", "checkout,build")
	if r.code != 0 {
		t.Fatalf("remote build: exit %d\n%s", r.code, r.stderr)
	}
	if d := runRelayEnv(t, dir, env, "run", "--dry-run"); d.code != 0 || !strings.Contains(d.stdout, "steps run on the dry implementations: checkout, build, copy, sign, sbom, provenance, verify, release") ||
		!strings.Contains(d.stdout, "/acme/hello: ") || builds() != 2 {
		t.Fatalf("dry run after the build: exit %d, %d remote builds\n%s\n%s", d.code, builds(), d.stdout, d.stderr)
	}
	if rest := runRelayEnv(t, dir, env, "run"); rest.code != 0 {
		t.Fatalf("release built remotely: exit %d\n%s", rest.code, rest.stderr)
	}
	if n := builds(); n != 2 {
		t.Fatalf("%d remote builds, want one per platform", n)
	}
	im := readLock(t, filepath.Join(dir, "dist")).Images[0]
	if len(im.Platforms) != 2 {
		t.Fatalf("lock: %+v", im)
	}
	if v := runRelay(t, dir, "verify", im.Reference, "--key", filepath.Join(dir, "dist", "relay-signing.pub")); v.code != 0 {
		t.Fatalf("relay verify: exit %d\n%s\n%s", v.code, v.stdout, v.stderr)
	}
	if !strings.Contains(r.stderr, `"msg":"build run succeeded"`) || !strings.Contains(r.stderr, `"msg":"build log"`) {
		t.Fatalf("remote builds not logged:\n%s", r.stderr)
	}
	checkHeaders(t, hdrs.since(0), traceID, 10)
}
