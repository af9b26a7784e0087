//go:build integration

package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

// TestE2ECopyFromHungRegistry: a registry that accepts connections and never answers fails
// `relay copy` with exit 1 and an error naming the host and the timeout, instead of hanging
// until the job's limit.
func TestE2ECopyFromHungRegistry(t *testing.T) {
	host := testutil.HungServer(t)
	start := time.Now()
	code, _, stderr := runCLI(t, map[string]string{"RELAY_TIMEOUT": "1s", "RELAY_LOG_FORMAT": "text"}, "copy", host+"/acme/app:v1", "127.0.0.1:1/acme/app")
	took := time.Since(start)
	if code != exitStepFailed || !strings.Contains(stderr, host) || !strings.Contains(stderr, "no progress for 1s") {
		t.Fatalf("exit %d after %s:\n%s", code, took, stderr)
	}
	if !strings.Contains(stderr, "registry request failed, retrying") {
		t.Fatalf("the timed-out request was not retried:\n%s", stderr)
	}
	// A hang guard, not a speed target: the retries of 1s attempts within the 5m budget.
	if took > 5*time.Minute {
		t.Fatalf("took %s", took)
	}
	t.Logf("failed after %s", took)
}

// TestE2ERunWithHungBuildRegistry: relay run against a build registry that never answers
// fails the build step after about the host's retry budget, naming the host and the
// timeout relay.yaml gives it.
func TestE2ERunWithHungBuildRegistry(t *testing.T) {
	host := testutil.HungServer(t)
	dir := realExample(t, host, fmt.Sprintf("registries: [{host: %q, timeout: 1s, retry_budget: 3s}]\n", host))
	start := time.Now()
	r := runRelay(t, dir, "run", "--only", "checkout,build")
	took := time.Since(start)
	if r.code != exitStepFailed || !strings.Contains(r.stderr, "step build failed") || !strings.Contains(r.stderr, host) ||
		!strings.Contains(r.stderr, "no progress for 1s") {
		t.Fatalf("exit %d after %s:\n%s", r.code, took, r.stderr)
	}
	if took > 2*time.Minute { // a hang guard
		t.Fatalf("took %s", took)
	}
	t.Logf("failed after %s", took)
}
