//go:build integration

package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

// BenchmarkRunnerStartToExec measures `relay runner` from the exec of relay to the exec of
// the Actions runner's run.sh: process start, credentials (an App installation token), the
// JIT registration and the child's start, against a GitHub API fake on loopback (so API
// latency is near zero). Target from issue 5/6: at most 1 s.
func BenchmarkRunnerStartToExec(b *testing.B) {
	var ds []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		gh := testutil.StartGitHubRunners(b, "acme/shop")
		dir := testutil.FakeRunnerDir(b, "success")
		cmd := relayCmd(context.Background(), dir, "runner", "--repo", "acme/shop", "--runner-dir", dir, "--github-api-url", gh.URL)
		cmd.Env = append(cmd.Env, "RELAY_GITHUB_APP_ID="+gh.AppID, "RELAY_GITHUB_APP_KEY="+string(gh.AppKey))
		b.StartTimer()
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("relay runner: %v\n%s", err, out)
		}
		b.StopTimer()
		raw, err := os.ReadFile(filepath.Join(dir, "run.exec_at"))
		if err != nil {
			b.Fatal(err)
		}
		ns, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		ds = append(ds, time.Unix(0, ns).Sub(t0))
	}
	b.ReportMetric(float64(median(ds).Microseconds())/1000, "start-to-exec-ms")
}
