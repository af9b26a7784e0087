//go:build integration

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/config"
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
		repo, _ := name.NewRepository(reg + "/" + repository)
		im := config.Image{Name: "hello", Platforms: []string{platform}, Local: &config.LocalBuild{Base: "scratch", Go: &config.GoBuild{Main: ".", Binary: "/hello"}}}
		res, err := lb.Build(ctx, build.Request{Image: im, ContextDir: dir, Repository: repo, Source: build.SourceInfo{CommitTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}})
		if err != nil {
			return "", "", err
		}
		d, _ := name.NewDigest(res.Ref)
		return res.Digest, string(res.Log), c.Tag(ctx, d, tag)
	})
	dir := realExample(t, reg, "signing: {mode: key, key: "+testKeyFile(t)+"}\n")
	cfgPath := filepath.Join(dir, "relay.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	acr := "builder: {kind: acr, registry: " + reg + "/build, acr: {subscription: sub-1, resource_group: rg-build, registry: relayacr, arm_endpoint: " + fake.URL + "}}"
	cfg = []byte(strings.Replace(string(cfg), "builder: {kind: local, registry: "+reg+"/build}", acr, 1))
	os.WriteFile(cfgPath, cfg, 0o644)

	r := runRelayEnv(t, dir, fake.IdentityEnv(), "run")
	if r.code != 0 {
		t.Fatalf("release built by ACR Tasks: exit %d\n%s", r.code, r.stderr)
	}
	if n := len(fake.Requests()); n != 2 {
		t.Fatalf("%d ACR runs, want one per platform", n)
	}
	im := readLock(t, filepath.Join(dir, "dist")).Images[0]
	if len(im.Platforms) != 2 {
		t.Fatalf("lock: %+v", im)
	}
	if v := runRelay(t, dir, "verify", im.Reference, "--key", filepath.Join(dir, "dist", "relay-signing.pub")); v.code != 0 {
		t.Fatalf("relay verify: exit %d\n%s\n%s", v.code, v.stdout, v.stderr)
	}
	if !strings.Contains(r.stderr, `"msg":"build run succeeded"`) || !strings.Contains(r.stderr, `"msg":"build log"`) {
		t.Fatalf("ACR runs not logged:\n%s", r.stderr)
	}
}
