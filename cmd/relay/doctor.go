package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/github"
	"github.com/relaydev/relay/pkg/runner"
	"github.com/relaydev/relay/pkg/scaleset"
	"github.com/relaydev/relay/pkg/steps"
)

func doctorCommand(getenv func(string) string, optsOf func(*cli.Context) (Options, error)) *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check, reading only, what most often breaks a first deployment, each with the fix",
		UsageText: `relay doctor --org acme                  # runner credential, job queue, and relay.yaml if present
   relay doctor --repo acme/shop --config deploy/relay.yaml --output json`,
		Description: `Checks, without writing anything: the runner's GitHub App can mint tokens and register
runners for the scope (Administration: write, or Self-hosted runners: write), the job queue
the autoscaler watches is readable (Actions: read), the workflow grants id-token: write (when
run inside a job), the Actions runner's version (installed in --runner-dir, or pinned as an
image's actions-runner base in relay.yaml) against actions/runner's releases (GitHub refuses
a runner 30 days after a newer release: warn before, fail after), and, when relay.yaml
exists, the configuration, the source ref, every build and target repository (reachable,
push allowed), the signing and release credentials, and the builder. Exit 0 when nothing failed (warnings do not fail), 1 otherwise.`,
		Flags: append(append(scopeFlags(), listenerFlags()...),
			&cli.BoolFlag{Name: "listener", EnvVars: []string{"RELAY_LISTENER"}, Usage: "also check relay listener's deployment: the scale set service, runner group, scale set, the starter's permissions, --runner-version (give the listener's flags)"},
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: "relay.yaml", EnvVars: []string{"RELAY_CONFIG"}, Usage: "relay.yaml to check (skipped if it does not exist)"},
			&cli.StringFlag{Name: "output", Value: "text", EnvVars: []string{"RELAY_OUTPUT"}, Usage: "text or json"},
			&cli.StringFlag{Name: "runner-dir", Value: "/actions-runner", EnvVars: []string{"RELAY_RUNNER_DIR"}, Usage: "an installed Actions runner whose version to check (the runner image sets it)"},
			&cli.StringFlag{Name: "log-format", EnvVars: []string{"RELAY_LOG_FORMAT"}, Usage: "json, text or github (default: github inside GitHub Actions, text on a terminal, else json)"},
			&cli.StringFlag{Name: "log-level", Value: "warn", EnvVars: []string{"RELAY_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		),
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return &usageError{Err: fmt.Errorf("relay doctor takes no arguments, got %q", c.Args().Slice())}
			}
			o, err := optsOf(c)
			if err != nil {
				return err
			}
			f := flagReader{c: c, getenv: getenv}
			scope := runner.Scope{Repo: f.str("repo"), Org: f.str("org"), Enterprise: f.str("enterprise")}
			api, output, runnerDir := f.str("github-api-url"), f.str("output"), f.str("runner-dir")
			if f.err != nil {
				return f.err
			}
			if output != "text" && output != "json" {
				return &usageError{Err: fmt.Errorf("--output %q: use text or json", output)}
			}
			var lc *listenerConfig
			if f.bool("listener") {
				l := readListenerConfig(&f)
				if err := l.validate(); err != nil {
					return &usageError{Err: fmt.Errorf("--listener: %w", err)}
				}
				lc = &l
			}
			if f.err != nil {
				return f.err
			}
			return doctorCmd(c.Context, o, scope, api, output, runnerDir, lc)
		},
	}
}

func doctorCmd(ctx context.Context, o Options, scope runner.Scope, api, output, runnerDir string, lc *listenerConfig) error {
	o = o.withChain(ctx, nil)
	d := runner.DoctorOptions{Scope: scope, APIURL: api, Getenv: o.Getenv, HTTP: o.httpClient(ctx), Retrier: o.retrier(),
		RunnerDir: runnerDir, Pins: runnerPins(o.Config)}
	if scope.Repo != "" || scope.Org != "" || scope.Enterprise != "" {
		var secrets []string
		d.Token, d.TokenErr = runnerTokens(ctx, o, scope, api, &secrets)
		if d.TokenErr == nil && d.Token != nil && o.Getenv("RELAY_GITHUB_TOKEN") == "" {
			// The installation token's permissions say more than any call could.
			d.Permissions = appPermissions(ctx, o, scope, api)
		}
	}
	if lc != nil && lc.checkVersion {
		v, _ := runner.ParseVersion(lc.runnerVersion)
		d.Pins = append(d.Pins, runner.Pin{Where: "--runner-version (the runner image the listener starts)", Version: v})
	}
	checks := runner.Doctor(ctx, d)
	if lc != nil {
		checks = append(checks, listenerChecks(ctx, o, *lc, d.Token)...)
	}
	checks = append(checks, configChecks(ctx, o)...)
	failed := 0
	for _, c := range checks {
		if c.Status == "fail" {
			failed++
		}
	}
	if output == "json" {
		enc := json.NewEncoder(o.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(map[string]any{"checks": checks, "failed": failed})
	} else {
		for _, c := range checks {
			mark := map[string]string{"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip"}[c.Status]
			fmt.Fprintf(o.Stdout, "%s %s: %s\n", mark, c.Name, c.Note)
			if c.Fix != "" {
				fmt.Fprintf(o.Stdout, "     fix: %s\n", c.Fix)
			}
		}
	}
	if ctx.Err() != nil {
		return steps.ErrInterrupted
	}
	if failed > 0 {
		return fmt.Errorf("doctor: %d of %d checks failed", failed, len(checks))
	}
	if output == "text" {
		fmt.Fprintf(o.Stdout, "doctor: %d checks, none failed\n", len(checks))
	}
	return nil
}

// listenerChecks are relay doctor --listener's: what relay listener needs beyond a
// runner's credential. Reading only (a registration token is minted to connect: it
// expires within the hour and registers nothing).
func listenerChecks(ctx context.Context, o Options, lc listenerConfig, tokens runner.TokenFunc) []runner.Check {
	var out []runner.Check
	add := func(name, status, note, fix string) {
		out = append(out, runner.Check{Name: name, Status: status, Note: note, Fix: fix})
	}
	hc := o.httpClient(ctx)
	if tokens == nil {
		add("scale set service", "skip", "no App credential to connect with", "")
	} else if client, err := scaleset.New(scaleset.Options{ConfigURL: lc.scope.WebURL(lc.api), APIURL: lc.api, HTTP: hc,
		RegistrationToken: func(ctx context.Context) (string, error) {
			return runner.RegistrationToken(ctx, lc.scope, lc.api, tokens, hc, o.retrier())
		}}); err != nil {
		add("scale set service", "fail", err.Error(), "")
	} else if err := client.Connect(ctx); err != nil {
		add("scale set service", "fail", err.Error(), "the App needs Self-hosted runners: write on the organization (Administration: write on a repository) to register runner scale sets")
	} else {
		add("scale set service", "ok", "connected for "+lc.scope.String(), "")
		groupID := 1
		if lc.scope.Repo == "" || !strings.EqualFold(lc.group, "default") {
			if g, err := client.RunnerGroup(ctx, lc.group); err != nil {
				add("runner group", "fail", err.Error(), "create the runner group "+lc.group+" in "+lc.scope.String()+"'s Actions settings, or set --runner-group")
				groupID = 0
			} else {
				groupID = g.ID
				add("runner group", "ok", fmt.Sprintf("%s (id %d)", g.Name, g.ID), "")
			}
		}
		if groupID != 0 {
			switch ss, err := client.ScaleSet(ctx, groupID, lc.scaleSet); {
			case errors.Is(err, scaleset.ErrNotFound):
				add("scale set", "ok", lc.scaleSet+" does not exist yet: the listener creates it", "")
			case err != nil:
				add("scale set", "fail", err.Error(), "")
			default:
				add("scale set", "ok", fmt.Sprintf("%s exists (id %d): the listener reuses it", ss.Name, ss.ID), "")
			}
		}
	}
	starter, err := newStarter(ctx, o, lc, hc)
	if err != nil {
		add("starter", "fail", err.Error(), "")
		return out
	}
	type checker interface {
		Missing(context.Context) ([]string, error)
	}
	missing, err := starter.(checker).Missing(ctx)
	switch {
	case err != nil:
		add("starter", "fail", err.Error(), "")
	case len(missing) > 0 && lc.starter == "kubernetes":
		add("starter", "fail", "the service account may not: "+strings.Join(missing, ", "), "bind the listener's service account to the Role in image/deploy/kubernetes-listener.yaml (docs/runner.md, Permissions)")
	case len(missing) > 0:
		add("starter", "fail", "the listener's identity lacks: "+strings.Join(missing, ", "), "assign it the roles in docs/runner.md (Container Apps: a role with these actions on the job; Key Vault Secrets Officer on the vault)")
	default:
		add("starter", "ok", lc.starter+": every permission the listener uses is granted", "")
	}
	return out
}

// runnerPins are the runner versions relay.yaml pins: images on the official runner image
// (nil when there is no valid relay.yaml; its own check says why).
func runnerPins(path string) []runner.Pin {
	cfg, err := config.Load(path)
	if err != nil {
		return nil
	}
	var pins []runner.Pin
	for _, im := range cfg.Images {
		if im.Local == nil {
			continue
		}
		if v, ok := runner.PinnedVersion(im.Local.Base); ok {
			pins = append(pins, runner.Pin{Where: "image " + im.Name + "'s base in " + path, Version: v})
		}
	}
	return pins
}

// appPermissions mints one installation token to read what it may do (nil on error: the
// credential check reports the error itself).
func appPermissions(ctx context.Context, o Options, scope runner.Scope, api string) map[string]string {
	key := []byte(o.Getenv("RELAY_GITHUB_APP_KEY"))
	if f := o.Getenv("RELAY_GITHUB_APP_KEY_FILE"); len(key) == 0 && f != "" {
		key, _ = os.ReadFile(f)
	}
	if len(key) == 0 {
		return nil
	}
	t, err := github.InstallationToken(ctx, github.AppOptions{AppID: o.Getenv("RELAY_GITHUB_APP_ID"), PrivateKey: key, Repository: scope.Repo, Org: scope.Org, BaseURL: api, HTTP: o.httpClient(ctx), Retrier: o.retrier()})
	if err != nil {
		return nil
	}
	o.Redactor.Add(t.Value)
	return t.Permissions
}

// configChecks are relay.yaml's: what --dry-run checks, plus push access to every
// repository relay writes to and the builder.
func configChecks(ctx context.Context, o Options) []runner.Check {
	if _, err := os.Stat(o.Config); errors.Is(err, os.ErrNotExist) {
		return []runner.Check{{Name: "relay.yaml", Status: "skip", Note: o.Config + " does not exist: pipeline checks skipped (--config names another)"}}
	}
	in, err := load(o, nil)
	if err != nil {
		return []runner.Check{{Name: "relay.yaml", Status: "fail", Note: err.Error(), Fix: "docs/config.md lists every key"}}
	}
	cfg := in.cfg
	out := []runner.Check{{Name: "relay.yaml", Status: "ok", Note: "valid"}}
	po := o
	po.DryRun = true
	if po.Jobs < 1 { // the doctor command has no --jobs or --out: the run's defaults
		po.Jobs = 4
	}
	if po.Out == "" {
		po.Out = "dist"
	}
	wo := po.wiring(in.logger, in.cid)
	wo.Inspect = true
	w, err := wire.Build(ctx, wo, cfg)
	if err != nil {
		return append(out, runner.Check{Name: "relay.yaml for a real run", Status: "fail", Note: err.Error()})
	}
	defer w.Close()
	out = append(out, builderCheck(ctx, cfg, w.Env))
	for _, f := range append(steps.Preflight(ctx, w.Env), wire.CredentialChecks(ctx, wo, cfg)...) {
		c := runner.Check{Name: f.Check, Status: "ok", Note: f.Note}
		if !f.OK {
			c.Status = "fail"
		}
		out = append(out, c)
	}
	for _, f := range steps.PushChecks(ctx, w.Env) {
		c := runner.Check{Name: f.Check, Status: "ok", Note: f.Note}
		if !f.OK {
			c.Status, c.Fix = "fail", "give relay's registry credentials write access (docs/cli.md, registries)"
		}
		out = append(out, c)
	}
	if cfg.Release.Target == "github" && cfg.Release.GitHub != nil {
		out = append(out, releaseCheck(ctx, o, cfg))
	}
	return out
}

// builderCheck says whether the builder can be used: a cloud builder is asked, reading
// only, whether the identity may run builds.
func builderCheck(ctx context.Context, cfg *config.Config, env *steps.Env) runner.Check {
	c := runner.Check{Name: "builder " + cfg.Builder.Kind, Status: "ok"}
	switch b := env.Builder.(type) {
	case nil:
		c.Status, c.Note, c.Fix = "fail", "this build of relay has no "+cfg.Builder.Kind+" builder", "use builder.kind local, acr, gcb or codebuild (docs/config.md, Builders)"
	case interface {
		Check(context.Context) (string, error)
	}:
		note, err := b.Check(ctx)
		if err != nil {
			c.Status, c.Note, c.Fix = "fail", err.Error(), "docs/config.md, Builders"
		} else {
			c.Note = note
		}
	default:
		c.Note = "builds without a daemon on this machine; needs Go for images with local.go"
	}
	return c
}

// releaseCheck says whether the release credential may write releases: an App token's
// contents permission; a GITHUB_TOKEN's cannot be read, so the check says what to grant.
func releaseCheck(ctx context.Context, o Options, cfg *config.Config) runner.Check {
	c := runner.Check{Name: "release permission on " + cfg.Release.GitHub.Repository}
	if o.Getenv("RELAY_GITHUB_APP_ID") == "" || o.Getenv("GITHUB_TOKEN") != "" || o.Getenv("GH_TOKEN") != "" {
		c.Status, c.Note = "skip", "a GITHUB_TOKEN's permissions cannot be read ahead: in a workflow grant `permissions: contents: write` (and `attestations: write` with release.github.attestations)"
		return c
	}
	perms := appPermissions(ctx, o, runner.Scope{Repo: cfg.Release.GitHub.Repository}, githubAPI(cfg))
	switch {
	case perms == nil:
		c.Status, c.Note, c.Fix = "fail", "no installation token for "+cfg.Release.GitHub.Repository, "install the GitHub App on the repository"
	case perms["contents"] != "write":
		c.Status, c.Note, c.Fix = "fail", fmt.Sprintf("the App's token has contents: %q", perms["contents"]), "give the GitHub App Contents: write"
	default:
		c.Status, c.Note = "ok", "the App's token has contents: write"
	}
	return c
}

func githubAPI(cfg *config.Config) string {
	if cfg.Release.GitHub.BaseURL != "" {
		return cfg.Release.GitHub.BaseURL
	}
	return "https://api.github.com"
}
