package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/relaydev/relay/pkg/config"
)

// The runner image and the deployment examples stay true to relay: image/relay.yaml builds
// relay-runner on a base pinned by digest, for amd64 and arm64, non-root, relay runner as
// the exec-form entrypoint; image/Dockerfile agrees with it on all of that and installs no
// Docker; and every RELAY_ variable they (and docs/runner.md) set is one relay reads.
func TestImageAndDeployFiles(t *testing.T) {
	cfg, err := config.Load("../../image/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var runner, relay *config.Image
	for i := range cfg.Images {
		switch cfg.Images[i].Name {
		case "relay-runner":
			runner = &cfg.Images[i]
		case "relay":
			relay = &cfg.Images[i]
		}
	}
	if runner == nil || relay == nil {
		t.Fatalf("image/relay.yaml lacks relay-runner or relay: %+v", cfg.Images)
	}
	pinned := regexp.MustCompile(`^[a-z0-9.-]+/[a-z0-9./-]+:[a-z0-9.-]+@sha256:[0-9a-f]{64}$`)
	for _, im := range []*config.Image{runner, relay} {
		l := im.Local
		if strings.Join(im.Platforms, ",") != "linux/amd64,linux/arm64" || !pinned.MatchString(l.Base) || l.Go == nil || l.Go.Main != "./cmd/relay" ||
			l.Go.Binary != "/usr/local/bin/relay" || l.User == "" || strings.HasPrefix(l.User, "0") || l.User == "root" {
			t.Errorf("image %s: want both platforms, a base pinned by tag and digest, relay built from ./cmd/relay, non-root: %+v", im.Name, l)
		}
	}
	rl := runner.Local
	if !strings.HasPrefix(rl.Base, "ghcr.io/actions/actions-runner:") || rl.User != "1001" || rl.Workdir != "/home/runner" ||
		strings.Join(rl.Entrypoint, " ") != "/usr/local/bin/relay runner" || !slices.Contains(rl.Env, "RELAY_RUNNER_DIR=/home/runner") {
		t.Errorf("relay-runner: %+v", rl)
	}

	df, err := os.ReadFile("../../image/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(df)
	for _, re := range []string{
		`(?m)^FROM ` + regexp.QuoteMeta(rl.Base) + `$`,
		`(?m)^COPY --chmod=0755 bin/relay-linux-\$\{TARGETARCH\} /usr/local/bin/relay$`,
		`(?m)^USER ` + rl.User + `$`,
		`(?m)^WORKDIR ` + rl.Workdir + `$`,
		`RELAY_RUNNER_DIR=/home/runner`,
		`(?m)^ENTRYPOINT \["/usr/local/bin/relay", "runner"\]$`,
	} {
		if !regexp.MustCompile(re).MatchString(d) {
			t.Errorf("image/Dockerfile does not agree with image/relay.yaml: lacks %s", re)
		}
	}
	if regexp.MustCompile(`(?i)install[^\n]*docker`).MatchString(d) {
		t.Error("image/Dockerfile installs Docker")
	}

	known := map[string]bool{}
	// relay runner's variables, and relay run's (docs/runner.md shows how the image is built).
	for _, f := range append(runnerCommand(os.Getenv, nil).Flags, runCommand(os.Getenv, nil).Flags...) {
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
	for _, f := range []string{"../../image/Dockerfile", "../../image/relay.yaml", "../../image/deploy/azure-container-apps-job.yaml", "../../image/deploy/keda-scaledjob.yaml", "../../docs/runner.md"} {
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
