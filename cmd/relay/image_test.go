package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/scaleset"
)

// The runner image and the deployment examples stay true to relay: relay.yaml builds
// relay-runner on a base pinned by digest, for amd64 and arm64, non-root, relay runner as
// the exec-form entrypoint; image/Dockerfile agrees with it on all of that and installs no
// Docker; and every RELAY_ variable they (and docs/runner.md) set is one relay reads.
func TestImageAndDeployFiles(t *testing.T) {
	cfg, err := config.LoadWith("../../relay.yaml", config.Fallback{Ref: "v0.0.0-test"})
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
		t.Fatalf("relay.yaml lacks relay-runner or relay: %+v", cfg.Images)
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
	// Each target stage of the Dockerfile against its image in relay.yaml.
	stages := map[string]string{}
	for _, st := range regexp.MustCompile(`(?m)^FROM `).Split(string(df), -1)[1:] {
		if m := regexp.MustCompile(`^\S+ AS (\S+)`).FindStringSubmatch(st); m != nil {
			stages[m[1]] = "FROM " + st
		}
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)[1]
	for stage, res := range map[string][]string{
		// relay built in the Dockerfile, from go.mod's Go, static, stamped with the version.
		"build": {`^FROM golang:` + regexp.QuoteMeta(string(goVersion)) + `-bookworm@sha256:[0-9a-f]{64} AS build\n`,
			`(?m)^RUN CGO_ENABLED=0 go build -trimpath -ldflags "[^"]*-X main.version=\$\{VERSION\}" -o /out/relay ./cmd/relay$`},
		"relay-runner": {`^FROM ` + regexp.QuoteMeta(rl.Base) + ` AS relay-runner\n`,
			`(?m)^COPY --from=build /out/relay /usr/local/bin/relay$`,
			`(?m)^USER ` + rl.User + `$`,
			`(?m)^WORKDIR ` + rl.Workdir + `$`,
			`RELAY_RUNNER_DIR=/home/runner`,
			`(?m)^ENTRYPOINT \["/usr/local/bin/relay", "runner"\]$`},
		"relay": {`^FROM ` + regexp.QuoteMeta(relay.Local.Base) + ` AS relay\n`,
			`(?m)^COPY --from=build /out/relay /usr/local/bin/relay$`,
			`(?m)^USER ` + relay.Local.User + `$`,
			`(?m)^ENTRYPOINT \["/usr/local/bin/relay"\]$`},
	} {
		for _, re := range res {
			if !regexp.MustCompile(re).MatchString(stages[stage]) {
				t.Errorf("image/Dockerfile stage %s does not agree with relay.yaml: lacks %s\n%s", stage, re, stages[stage])
			}
		}
	}
	d := string(df)
	if strings.Contains(d, "--chmod") || strings.Contains(d, "$BUILDPLATFORM") {
		t.Error("image/Dockerfile uses a BuildKit-only feature: cloud builders' classic builds would fail")
	}
	// The cloud builder's relay.yaml builds the same images from the Dockerfile's stages.
	cloud, err := config.Load("../../image/relay-cloud.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cloud.Images) != len(cfg.Images) || cloud.Builder.Kind == "local" {
		t.Fatalf("image/relay-cloud.yaml: %d images on builder %s", len(cloud.Images), cloud.Builder.Kind)
	}
	for i, im := range cloud.Images {
		local := cfg.Images[i]
		if im.Name != local.Name || strings.Join(im.Platforms, ",") != strings.Join(local.Platforms, ",") || strings.Join(im.Targets, ",") != strings.Join(local.Targets, ",") ||
			strings.Join(im.Tags, ",") != strings.Join(local.Tags, ",") || im.Docker == nil || im.Docker.Dockerfile != "image/Dockerfile" ||
			im.Docker.Target != im.Name || stages[im.Name] == "" || im.Docker.BuildArgs["VERSION"] != "{{ .Version }}" {
			t.Errorf("image/relay-cloud.yaml image %d does not build %s as relay.yaml does: %+v %+v", i, local.Name, im, im.Docker)
		}
	}
	if regexp.MustCompile(`(?i)install[^\n]*docker`).MatchString(d) {
		t.Error("image/Dockerfile installs Docker")
	}

	known := map[string]bool{}
	// relay runner's variables, and relay run's (docs/runner.md shows how the image is built).
	for _, f := range slices.Concat(runnerCommand(os.Getenv, nil).Flags, runCommand(os.Getenv, nil).Flags, listenerCommand(os.Getenv, nil).Flags) {
		if ev, ok := f.(interface{ GetEnvVars() []string }); ok {
			for _, e := range ev.GetEnvVars() {
				known[e] = true
			}
		}
	}
	for _, e := range []string{"RELAY_GITHUB_APP_ID", "RELAY_GITHUB_APP_KEY", "RELAY_GITHUB_APP_KEY_FILE", "RELAY_GITHUB_APP_KEY_VAULT_SECRET",
		"RELAY_GITHUB_TOKEN", "RELAY_RUNNER_REGISTRATION_TOKEN", "RELAY_CORRELATION_ID", "RELAY_RUNNER_NAME", "RELAY_RUNNER_ID"} {
		known[e] = true
	}
	if !known["RELAY_IDLE_TIMEOUT"] || !known["RELAY_RUNNER_DIR"] {
		t.Fatalf("runner flags not found: %v", known)
	}
	for _, f := range []string{"../../image/Dockerfile", "../../relay.yaml", "../../image/relay-cloud.yaml", "../../image/deploy/azure-container-apps-job.yaml", "../../image/deploy/keda-scaledjob.yaml", "../../docs/runner.md",
		"../../image/deploy/azure-container-apps-listener.yaml", "../../image/deploy/azure-container-apps-listener-job.yaml", "../../image/deploy/kubernetes-listener.yaml"} {
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

// TestListenerDeployments: the listener's deployments run one listener, pin the runner
// version the runner image has, give the runner side no App credential, grant Kubernetes
// RBAC exactly for what the starter does, and carry a Job template the starter accepts.
func TestListenerDeployments(t *testing.T) {
	df, err := os.ReadFile("../../image/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	pinned := regexp.MustCompile(`actions/actions-runner:(\d+\.\d+\.\d+)@`).FindStringSubmatch(string(df))
	if pinned == nil {
		t.Fatal("no actions-runner base in image/Dockerfile")
	}
	docs := func(f string) []map[string]any {
		b, err := os.ReadFile("../../image/deploy/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "RELAY_RUNNER_VERSION\n") && f != "azure-container-apps-listener-job.yaml" {
			t.Errorf("%s sets no RELAY_RUNNER_VERSION", f)
		}
		for _, m := range regexp.MustCompile(`RELAY_RUNNER_VERSION\s+value: (\S+)`).FindAllStringSubmatch(string(b), -1) {
			if m[1] != pinned[1] {
				t.Errorf("%s pins runner %s, the runner image has %s", f, m[1], pinned[1])
			}
		}
		var out []map[string]any
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var d map[string]any
			if err := dec.Decode(&d); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out = append(out, d)
		}
		return out
	}
	get := func(v any, path ...any) any {
		for _, p := range path {
			switch k := p.(type) {
			case string:
				m, _ := v.(map[string]any)
				v = m[k]
			case int:
				l, _ := v.([]any)
				if k >= len(l) {
					return nil
				}
				v = l[k]
			}
		}
		return v
	}
	app := docs("azure-container-apps-listener.yaml")[0]
	if get(app, "properties", "template", "scale", "minReplicas") != 1 || get(app, "properties", "template", "scale", "maxReplicas") != 1 {
		t.Error("the listener Container App is not exactly one replica")
	}
	job := docs("azure-container-apps-listener-job.yaml")[0]
	if get(job, "properties", "configuration", "triggerType") != "Manual" || get(job, "properties", "configuration", "replicaRetryLimit") != 0 {
		t.Error("the runner job is not manual-trigger without retries")
	}
	k8s := docs("kubernetes-listener.yaml")
	var template string
	for _, d := range k8s {
		switch d["kind"] {
		case "Role":
			granted := map[string]bool{}
			for _, r := range get(d, "rules").([]any) {
				for _, res := range get(r, "resources").([]any) {
					for _, v := range get(r, "verbs").([]any) {
						granted[fmt.Sprint(v)+" "+fmt.Sprint(res)] = true
					}
				}
			}
			for _, want := range []string{"create jobs", "list jobs", "patch jobs", "delete jobs", "create secrets", "create selfsubjectaccessreviews"} {
				if !granted[want] {
					t.Errorf("the Role does not grant %s", want)
				}
			}
			for g := range granted {
				if strings.HasSuffix(g, " secrets") && g != "create secrets" {
					t.Errorf("the Role grants %s: the listener never reads a Secret", g)
				}
			}
		case "Deployment":
			if get(d, "spec", "replicas") != 1 || get(d, "spec", "strategy", "type") != "Recreate" {
				t.Error("the listener Deployment may run two listeners at once")
			}
		case "ConfigMap":
			template = fmt.Sprint(get(d, "data", "runner-job.yaml"))
		}
	}
	var tmpl any
	if err := yaml.Unmarshal([]byte(template), &tmpl); err != nil {
		t.Fatal(err)
	}
	j, err := jsonOf(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := scaleset.NewKubernetes(scaleset.KubernetesOptions{APIServer: "https://k8s.example", Namespace: "relay", Listener: "relay-linux-listener", Job: j, HTTP: http.DefaultClient}); err != nil {
		t.Errorf("the ConfigMap's Job template: %v", err)
	}
	for _, f := range []string{"azure-container-apps-listener-job.yaml"} {
		b, _ := os.ReadFile("../../image/deploy/" + f)
		if strings.Contains(string(b), "RELAY_GITHUB_") {
			t.Errorf("%s gives the runner an App credential", f)
		}
	}
	if strings.Contains(template, "RELAY_GITHUB_") {
		t.Error("the runner Job template gives the runner an App credential")
	}
	// Every deployment file a message or a doc points at exists.
	var sources []string
	for _, glob := range []string{"*.go", "../../pkg/*/*.go", "../../docs/*.md", "../../README.md"} {
		m, _ := filepath.Glob(glob)
		sources = append(sources, m...)
	}
	for _, f := range sources {
		b, _ := os.ReadFile(f)
		for _, p := range regexp.MustCompile(`image/deploy/[A-Za-z0-9_./-]+\.yaml`).FindAllString(string(b), -1) {
			if _, err := os.Stat("../../" + p); err != nil {
				t.Errorf("%s names %s, which does not exist", f, p)
			}
		}
	}
}
