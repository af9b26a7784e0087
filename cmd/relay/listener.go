package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/relaydev/relay/pkg/runner"
	"github.com/relaydev/relay/pkg/scaleset"
)

func listenerCommand(getenv func(string) string, optsOf func(*cli.Context) (Options, error)) *cli.Command {
	return &cli.Command{
		Name:  "listener",
		Usage: "scale runners to the queue without polling: hold a runner scale set's session, start one execution per job",
		UsageText: `relay listener --org acme --scale-set relay-linux --runner-version 2.330.0 --starter container-apps \
       --container-apps-job /subscriptions/SUB/resourceGroups/ci/providers/Microsoft.App/jobs/relay-runner \
       --key-vault https://acme-runner-jit.vault.azure.net
   relay listener --repo acme/shop --scale-set shop --runner-version 2.330.0 --starter kubernetes --job-template /etc/relay/runner-job.yaml`,
		Description: `The always-on scaler of a runner scale set (docs/runner.md). Workflows say runs-on: SCALE-SET.
The listener authenticates as a GitHub App like relay runner (RELAY_GITHUB_APP_ID with
RELAY_GITHUB_APP_KEY, RELAY_GITHUB_APP_KEY_FILE or RELAY_GITHUB_APP_KEY_VAULT_SECRET), creates
the scale set in --runner-group or reuses it, holds its message session (GitHub pushes job
assignments by long poll: no REST polling), and keeps one execution running per assigned job,
up to --max-runners, deciding from the session's statistics rather than from events alone.
Each execution gets a single-use JIT config and no App credential: as a Kubernetes Secret owned
by its Job (--starter kubernetes, in-cluster service account), or as a Key Vault secret its
managed identity reads (--starter container-apps, started through ARM with the listener's
managed identity), deleted once its runner took the job. An execution whose runner takes no
job within --register-timeout is stopped and its runner removed. Before minting any config it
checks --runner-version against actions/runner's releases: GitHub refuses runners 30 days
after a newer release. Logs one JSON event per lifecycle step (session.opened, jobs.assigned,
execution.started, execution.finished, runner.removed) with the correlation id, and serves
Prometheus metrics on --metrics-address. SIGTERM deletes the session and exits 0; exit 2 is a
configuration to fix, 1 a service that kept failing past --failure-budget.`,
		Flags: append(append(scopeFlags(), listenerFlags()...),
			&cli.StringFlag{Name: "metrics-address", Value: "127.0.0.1:9102", EnvVars: []string{"RELAY_METRICS_ADDRESS"}, Usage: "where to serve /metrics and /healthz; empty: nowhere (a non-loopback address exposes them to the network)"},
			&cli.StringFlag{Name: "log-format", EnvVars: []string{"RELAY_LOG_FORMAT"}, Usage: "json, text or github (default: text on a terminal, else json)"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"RELAY_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		),
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return &usageError{Err: fmt.Errorf("relay listener takes no arguments, got %q", c.Args().Slice())}
			}
			o, err := optsOf(c)
			if err != nil {
				return err
			}
			f := flagReader{c: c, getenv: getenv}
			lc := readListenerConfig(&f)
			lc.metrics = f.str("metrics-address")
			if f.err != nil {
				return f.err
			}
			if err := lc.validate(); err != nil {
				return &usageError{Err: err}
			}
			return listenerCmd(c.Context, o, lc)
		},
	}
}

// listenerFlags are what relay listener and relay doctor --listener share.
func listenerFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "scale-set", EnvVars: []string{"RELAY_SCALE_SET"}, Usage: "the runner scale set's name: the label workflows put in runs-on (required)"},
		&cli.StringFlag{Name: "runner-group", Value: "Default", EnvVars: []string{"RELAY_RUNNER_GROUP"}, Usage: "runner group of the scale set (organization or enterprise scope)"},
		&cli.StringSliceFlag{Name: "labels", EnvVars: []string{"RELAY_LABELS"}, Usage: "more labels of the scale set, when it is created"},
		&cli.IntFlag{Name: "max-runners", Value: 10, EnvVars: []string{"RELAY_MAX_RUNNERS"}, Usage: "never more executions running at once"},
		&cli.DurationFlag{Name: "register-timeout", Value: 10 * time.Minute, EnvVars: []string{"RELAY_REGISTER_TIMEOUT"}, Usage: "stop an execution whose runner took no job within this, and remove the runner"},
		&cli.DurationFlag{Name: "failure-budget", Value: 10 * time.Minute, EnvVars: []string{"RELAY_FAILURE_BUDGET"}, Usage: "how long the scale set service may keep failing before the listener exits 1"},
		&cli.StringFlag{Name: "listener-name", EnvVars: []string{"RELAY_LISTENER_NAME"}, Usage: "the session's owner and the label of the executions it starts (default: SCALE-SET-listener)"},
		&cli.StringFlag{Name: "runner-version", EnvVars: []string{"RELAY_RUNNER_VERSION"}, Usage: "the Actions runner version of the runner image (required unless --check-runner-version=false)"},
		&cli.BoolFlag{Name: "check-runner-version", Value: true, EnvVars: []string{"RELAY_CHECK_RUNNER_VERSION"}, Usage: "refuse to mint JIT configs for a runner version GitHub refuses, checked at start and daily"},
		&cli.StringFlag{Name: "starter", EnvVars: []string{"RELAY_STARTER"}, Usage: "container-apps or kubernetes (required)"},
		&cli.StringFlag{Name: "container-apps-job", EnvVars: []string{"RELAY_CONTAINER_APPS_JOB"}, Usage: "the manual-trigger Container Apps job's resource id (container-apps)"},
		&cli.StringFlag{Name: "key-vault", EnvVars: []string{"RELAY_KEY_VAULT"}, Usage: "the Key Vault that holds each execution's JIT config, https://NAME.vault.azure.net (container-apps)"},
		&cli.StringFlag{Name: "arm-endpoint", Value: "https://management.azure.com", EnvVars: []string{"RELAY_ARM_ENDPOINT"}, Usage: "Azure Resource Manager (another for sovereign clouds)"},
		&cli.StringFlag{Name: "job-template", EnvVars: []string{"RELAY_JOB_TEMPLATE"}, Usage: "the runner's Job manifest, YAML or JSON (kubernetes)"},
		&cli.StringFlag{Name: "kubernetes-namespace", EnvVars: []string{"RELAY_KUBERNETES_NAMESPACE"}, Usage: "namespace of the runner Jobs (default: the listener pod's own)"},
		&cli.StringFlag{Name: "kubernetes-api-server", Value: "https://kubernetes.default.svc", EnvVars: []string{"RELAY_KUBERNETES_API_SERVER"}, Usage: "the API server (in-cluster by default)"},
		&cli.StringFlag{Name: "kubernetes-ca-file", EnvVars: []string{"RELAY_KUBERNETES_CA_FILE"}, Usage: "CA of the API server (default: the service account's ca.crt)"},
		&cli.StringFlag{Name: "kubernetes-token-file", EnvVars: []string{"RELAY_KUBERNETES_TOKEN_FILE"}, Usage: "bearer token file, re-read per call (default: the service account's token)"},
	}
}

// readListenerConfig reads the shared flags (metrics-address is the listener's own).
func readListenerConfig(f *flagReader) listenerConfig {
	lc := listenerConfig{
		scope:    runner.Scope{Repo: f.str("repo"), Org: f.str("org"), Enterprise: f.str("enterprise")},
		api:      f.str("github-api-url"),
		scaleSet: f.str("scale-set"), group: f.str("runner-group"), labels: f.list("labels"),
		maxRunners: f.int("max-runners"), registerTimeout: f.duration("register-timeout"), budget: f.duration("failure-budget"),
		name: f.str("listener-name"), runnerVersion: f.str("runner-version"), checkVersion: f.bool("check-runner-version"),
		starter: f.str("starter"), job: f.str("container-apps-job"), vault: f.str("key-vault"), arm: f.str("arm-endpoint"),
		template: f.str("job-template"), namespace: f.str("kubernetes-namespace"), apiServer: f.str("kubernetes-api-server"),
		caFile: f.str("kubernetes-ca-file"), tokenFile: f.str("kubernetes-token-file"),
	}
	return lc
}

type listenerConfig struct {
	scope                                             runner.Scope
	api, scaleSet, group, name, runnerVersion         string
	labels                                            []string
	maxRunners                                        int
	registerTimeout, budget                           time.Duration
	checkVersion                                      bool
	starter, job, vault, arm                          string
	template, namespace, apiServer, caFile, tokenFile string
	metrics                                           string
}

func (lc *listenerConfig) validate() error {
	if err := lc.scope.Validate(); err != nil {
		return err
	}
	if lc.scaleSet == "" {
		return errors.New("--scale-set is required: the name workflows put in runs-on")
	}
	if len(lc.scaleSet) > 45 || strings.ContainsAny(lc.scaleSet, " \t,") {
		return fmt.Errorf("--scale-set %q: use up to 45 characters without spaces or commas", lc.scaleSet)
	}
	if lc.maxRunners < 1 {
		return fmt.Errorf("--max-runners %d: at least 1", lc.maxRunners)
	}
	if lc.registerTimeout <= 0 || lc.budget <= 0 {
		return errors.New("--register-timeout and --failure-budget must be positive")
	}
	if lc.name == "" {
		lc.name = strings.ToLower(lc.scaleSet) + "-listener"
	}
	if lc.checkVersion {
		if lc.runnerVersion == "" {
			return errors.New("--runner-version is required: the Actions runner version of the runner image (e.g. 2.330.0), checked before any JIT config is minted; --check-runner-version=false to skip (GitHub Enterprise Server)")
		}
		if _, err := runner.ParseVersion(lc.runnerVersion); err != nil {
			return fmt.Errorf("--runner-version %q: %w", lc.runnerVersion, err)
		}
	}
	switch lc.starter {
	case "container-apps":
		if lc.job == "" || lc.vault == "" {
			return errors.New("--starter container-apps needs --container-apps-job (the job's resource id) and --key-vault (where JIT configs wait for their execution)")
		}
	case "kubernetes":
		if lc.template == "" {
			return errors.New("--starter kubernetes needs --job-template: the runner's Job manifest (the ConfigMap in image/deploy/kubernetes-listener.yaml holds one)")
		}
	case "":
		return errors.New("--starter is required: container-apps or kubernetes")
	default:
		return fmt.Errorf("--starter %q: use container-apps or kubernetes", lc.starter)
	}
	if lc.metrics != "" {
		if _, _, err := net.SplitHostPort(lc.metrics); err != nil {
			return fmt.Errorf("--metrics-address %q is not HOST:PORT (e.g. 127.0.0.1:9102)", lc.metrics)
		}
	}
	return nil
}

func listenerCmd(ctx context.Context, o Options, lc listenerConfig) error {
	logger, _, err := newLogger(o)
	if err != nil {
		return err
	}
	o = o.withChain(ctx, logger)
	logger = logger.With("scale_set", lc.scaleSet, "listener", lc.name)
	var secrets []string
	tokens, err := runnerTokens(ctx, o, lc.scope, lc.api, &secrets)
	if err != nil {
		return &runner.Error{Code: runner.ExitConfig, Err: err}
	}
	if tokens == nil {
		return &runner.Error{Code: runner.ExitConfig, Err: errors.New("no credentials: the listener needs a GitHub App (RELAY_GITHUB_APP_ID with RELAY_GITHUB_APP_KEY, RELAY_GITHUB_APP_KEY_FILE or RELAY_GITHUB_APP_KEY_VAULT_SECRET) or RELAY_GITHUB_TOKEN")}
	}
	hc := o.httpClient(ctx)
	poll := o.httpClient(ctx)
	poll.Timeout = 2 * time.Minute // a long poll holds for about 50 s
	starter, err := newStarter(ctx, o, lc, hc)
	if err != nil {
		return &runner.Error{Code: runner.ExitConfig, Err: err}
	}
	// relay's chain sets the User-Agent (version, correlation id) on every request.
	client, err := scaleset.New(scaleset.Options{ConfigURL: lc.scope.WebURL(lc.api), APIURL: lc.api, HTTP: poll, Logger: logger,
		RegistrationToken: func(ctx context.Context) (string, error) {
			t, err := runner.RegistrationToken(ctx, lc.scope, lc.api, tokens, hc, o.retrier())
			if err == nil {
				o.Redactor.Add(t)
			}
			return t, err
		}})
	if err != nil {
		return &runner.Error{Code: runner.ExitConfig, Err: err}
	}
	gate := versionGate(o, lc, tokens, hc, logger)
	if err := gate(ctx); err != nil {
		return err
	}
	metrics := scaleset.NewMetrics(lc.scaleSet)
	if lc.metrics != "" {
		stop, err := serveMetrics(lc.metrics, metrics, logger)
		if err != nil {
			return &runner.Error{Code: runner.ExitConfig, Err: err}
		}
		defer stop()
	}
	err = scaleset.Serve(ctx, scaleset.ServeOptions{Name: lc.scaleSet, RunnerGroup: lc.group, Labels: lc.labels, RepoScope: lc.scope.Repo != "",
		Listener: scaleset.ListenerOptions{Client: client, Owner: lc.name, MaxRunners: lc.maxRunners, Starter: starter, RunnerName: runnerNames(lc.scaleSet),
			RegisterTimeout: lc.registerTimeout, Metrics: metrics, BeforeMint: gate, Logger: logger, Budget: lc.budget}})
	switch {
	case errors.Is(err, scaleset.ErrNoRunnerGroup):
		return &runner.Error{Code: runner.ExitConfig, Err: fmt.Errorf("--runner-group: %w", err)}
	case err != nil && ctx.Err() == nil:
		logger.Error("listener stopped", "event", "listener.failed", "error", err.Error())
		return err
	case ctx.Err() != nil:
		stopIsClean(ctx) // SIGTERM: the session is deleted, a normal end
	}
	return err
}

// runnerNames names runners SCALE-SET-RANDOM: unique across listener restarts.
func runnerNames(scaleSet string) func() string {
	return func() string {
		var b [5]byte
		rand.Read(b[:])
		return strings.ToLower(scaleSet) + "-" + hex.EncodeToString(b[:])
	}
}

// versionGate refuses to mint configs for a runner version GitHub refuses, checking at
// start and again once a day (a listener runs for months; the window moves).
func versionGate(o Options, lc listenerConfig, tokens runner.TokenFunc, hc *http.Client, logger *slog.Logger) func(context.Context) error {
	if !lc.checkVersion {
		return func(context.Context) error { return nil }
	}
	v, _ := runner.ParseVersion(lc.runnerVersion)
	var mu sync.Mutex
	var checked time.Time
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if !checked.IsZero() && time.Since(checked) < 24*time.Hour {
			return nil
		}
		f, err := runner.CheckVersion(ctx, v, runner.VersionOptions{APIURL: lc.api, Token: tokens, HTTP: hc, Retrier: o.retrier()})
		switch {
		case errors.Is(err, runner.ErrNoReleases):
			logger.Info("this server lists no actions/runner releases: the runner version is not checked", "event", "runner.version", "version", v.String())
		case err != nil:
			if checked.IsZero() {
				logger.Warn("checking the runner version failed: going on, checking again later", "event", "runner.version", "error", err.Error())
			}
			return nil // a release listing that fails is no reason to leave jobs waiting
		case f.Behind() && time.Now().After(f.RefusedFrom):
			return &runner.Error{Code: runner.ExitConfig, Err: fmt.Errorf("%s: %s", f.Summary(time.Now()), f.Fix())}
		case f.Behind():
			logger.Warn(f.Summary(time.Now()), "event", "runner.version", "version", v.String(), "newest", f.Newest.String(), "fix", f.Fix())
		default:
			logger.Info("runner version is current", "event", "runner.version", "version", v.String())
		}
		checked = time.Now()
		return nil
	}
}

func newStarter(ctx context.Context, o Options, lc listenerConfig, hc *http.Client) (scaleset.Starter, error) {
	if lc.starter == "kubernetes" {
		raw, err := os.ReadFile(lc.template)
		if err != nil {
			return nil, fmt.Errorf("--job-template: %w", err)
		}
		var doc any
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("--job-template %s: %w", lc.template, err)
		}
		job, err := jsonOf(doc)
		if err != nil {
			return nil, fmt.Errorf("--job-template %s: %w", lc.template, err)
		}
		ko := scaleset.KubernetesOptions{APIServer: lc.apiServer, Namespace: lc.namespace, CAFile: lc.caFile, Listener: lc.name, Job: job}
		if lc.tokenFile != "" {
			ko.Token = func() (string, error) {
				b, err := os.ReadFile(lc.tokenFile)
				return strings.TrimSpace(string(b)), err
			}
		}
		return scaleset.NewKubernetes(ko)
	}
	cred, err := managedIdentity(o)
	if err != nil {
		return nil, err
	}
	return scaleset.NewContainerApps(scaleset.ContainerAppsOptions{Job: lc.job, Vault: lc.vault, Endpoint: lc.arm, Listener: lc.name, HTTP: hc,
		Token: func(ctx context.Context, scope string) (string, error) {
			t, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
			if err != nil {
				return "", fmt.Errorf("%w (is a managed identity assigned to the listener, and AZURE_CLIENT_ID set for a user-assigned one?)", err)
			}
			o.Redactor.Add(t.Token)
			return t.Token, nil
		}})
}

// serveMetrics serves /metrics and /healthz on addr until stop.
func serveMetrics(addr string, m *scaleset.Metrics, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	logger.Info("serving metrics", "event", "metrics.listening", "address", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// jsonOf turns a decoded YAML document into the JSON object the API server takes.
func jsonOf(doc any) ([]byte, error) {
	if _, ok := doc.(map[string]any); !ok {
		return nil, errors.New("not a Job manifest (a YAML or JSON object with spec.template)")
	}
	return json.Marshal(doc)
}
