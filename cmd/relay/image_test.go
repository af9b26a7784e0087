package main

import (
	"os"
	"regexp"
	"testing"
)

// The runner image and the deployment examples stay true to relay: a base pinned by digest,
// a runner archive pinned by checksum, non-root, relay runner as the exec-form ENTRYPOINT, no
// Docker; and every RELAY_ variable they (and docs/runner.md) set is one relay reads.
func TestImageAndDeployFiles(t *testing.T) {
	df, err := os.ReadFile("../../image/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(df)
	for _, re := range []string{
		`(?m)^ARG BASE=[a-z0-9./-]+:[a-z0-9.-]+@sha256:[0-9a-f]{64}$`,
		`(?m)^FROM \$\{BASE\}$`,
		`(?m)^ARG RUNNER_VERSION=\d+\.\d+\.\d+$`,
		`(?m)^ARG RUNNER_SHA256_AMD64=[0-9a-f]{64}$`,
		`(?m)^ARG RUNNER_SHA256_ARM64=[0-9a-f]{64}$`,
		`sha256sum -c -`,
		`(?m)^USER 1001:1001$`,
		`(?m)^ENTRYPOINT \["/usr/local/bin/relay", "runner"\]$`,
	} {
		if !regexp.MustCompile(re).MatchString(d) {
			t.Errorf("image/Dockerfile lacks %s", re)
		}
	}
	if regexp.MustCompile(`(?i)install[^\n]*docker`).MatchString(d) {
		t.Error("image/Dockerfile installs Docker")
	}

	known := map[string]bool{}
	for _, f := range runnerCommand(os.Getenv, nil).Flags {
		if ev, ok := f.(interface{ GetEnvVars() []string }); ok {
			for _, e := range ev.GetEnvVars() {
				known[e] = true
			}
		}
	}
	for _, e := range []string{"RELAY_GITHUB_APP_ID", "RELAY_GITHUB_APP_KEY", "RELAY_GITHUB_APP_KEY_FILE", "RELAY_GITHUB_APP_KEY_VAULT_SECRET",
		"RELAY_GITHUB_TOKEN", "RELAY_RUNNER_REGISTRATION_TOKEN", "RELAY_CORRELATION_ID"} {
		known[e] = true
	}
	if !known["RELAY_IDLE_TIMEOUT"] || !known["RELAY_RUNNER_DIR"] {
		t.Fatalf("runner flags not found: %v", known)
	}
	for _, f := range []string{"../../image/Dockerfile", "../../image/deploy/azure-container-apps-job.yaml", "../../image/deploy/keda-scaledjob.yaml", "../../docs/runner.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range regexp.MustCompile(`RELAY_[A-Z_]+[A-Z]`).FindAllString(string(b), -1) {
			if !known[name] {
				t.Errorf("%s sets %s, which relay runner does not read", f, name)
			}
		}
	}
}
