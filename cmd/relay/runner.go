package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/urfave/cli/v2"

	"github.com/relaydev/relay/pkg/github"
	"github.com/relaydev/relay/pkg/runner"
)

func runnerCommand(getenv func(string) string, optsOf func(*cli.Context) (Options, error)) *cli.Command {
	return &cli.Command{
		Name:  "runner",
		Usage: "be the ephemeral GitHub Actions runner: register, run one job, remove the registration",
		UsageText: `relay runner --repo OWNER/NAME [--labels self-hosted,linux,relay] [--idle-timeout 5m]
   RELAY_GITHUB_APP_ID=12345 RELAY_GITHUB_APP_KEY_FILE=/run/secrets/app.pem relay runner --org acme
   RELAY_GITHUB_APP_KEY_VAULT_SECRET=https://acme-kv.vault.azure.net/secrets/runner-app relay runner --org acme
   RELAY_JIT_CONFIG_FILE=/run/relay/jit/jitconfig relay runner      # started by relay listener`,
		Description: `The container ENTRYPOINT of a scale-to-zero runner job (docs/runner.md). Credentials: a GitHub
App (RELAY_GITHUB_APP_ID with RELAY_GITHUB_APP_KEY, RELAY_GITHUB_APP_KEY_FILE, or
RELAY_GITHUB_APP_KEY_VAULT_SECRET read with the container's managed identity), from which a
short-lived installation token is minted; or RELAY_RUNNER_REGISTRATION_TOKEN handed in by the
platform; or RELAY_GITHUB_TOKEN (enterprise scope); or, in an execution relay listener
started, no credential at all: the single-use JIT config it minted, from --jit-config-file
(a Kubernetes Secret mounted into the pod) or --jit-config-secret (a Key Vault secret read
with the job's managed identity); the listener removes that registration. relay registers a just-in-time runner
(config.sh --ephemeral where the server has no JIT), starts run.sh with a scrubbed environment
(none of these variables reach the job), logs the runner's lifecycle as JSON, stops it after
--idle-timeout without a job or --job-timeout into one, and deletes the registration on every
way out. At start it logs the runner's version against actions/runner's releases, as a
warning once GitHub refuses it (30 days after a newer release). Exit codes: 0 job succeeded
or no job, 1 job failed, 2 configuration or a runner version GitHub refuses, 3 registration,
4 runner failed, 5 job timeout, 143 stopped by SIGTERM.`,
		Flags:        append(scopeFlags(), runnerFlags()...),
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return &usageError{Err: fmt.Errorf("relay runner takes no arguments, got %q", c.Args().Slice())}
			}
			o, err := optsOf(c)
			if err != nil {
				return err
			}
			f := flagReader{c: c, getenv: getenv}
			ro := runner.Options{
				Scope:     runner.Scope{Repo: f.str("repo"), Org: f.str("org"), Enterprise: f.str("enterprise")},
				APIURL:    f.str("github-api-url"),
				RunnerDir: f.str("runner-dir"), NamePrefix: f.str("name-prefix"), Labels: f.list("labels"),
				IdleTimeout: f.duration("idle-timeout"), JobTimeout: f.duration("job-timeout"), StopGrace: f.duration("stop-grace"),
				OrphanAge: f.duration("orphan-age"), PassEnv: f.list("pass-env"), GroupID: int64(f.int("runner-group-id")),
				Getenv: getenv, Reap: os.Getpid() == 1, SkipVersionCheck: !f.bool("check-runner-version"),
			}
			jitFile, jitSecret := f.str("jit-config-file"), f.str("jit-config-secret")
			if f.err != nil {
				return f.err
			}
			if jitFile != "" || jitSecret != "" {
				return handedRunnerCmd(c.Context, o, ro, jitFile, jitSecret)
			}
			return runnerCmd(c.Context, o, ro)
		},
	}
}

// runnerFlags are relay runner's own flags.
func runnerFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "jit-config-file", EnvVars: []string{"RELAY_JIT_CONFIG_FILE"}, Usage: "a JIT config handed in by relay listener, as a file (no scope or credential then)"},
		&cli.StringFlag{Name: "jit-config-secret", EnvVars: []string{"RELAY_JIT_CONFIG_SECRET"}, Usage: "a JIT config handed in by relay listener, as a Key Vault secret URL read with the managed identity"},
		&cli.StringFlag{Name: "runner-dir", Value: "/actions-runner", EnvVars: []string{"RELAY_RUNNER_DIR"}, Usage: "directory of the unpacked Actions runner (run.sh, config.sh)"},
		&cli.StringFlag{Name: "name-prefix", Value: "relay", EnvVars: []string{"RELAY_NAME_PREFIX"}, Usage: "runner names are PREFIX-YYYYMMDDhhmmss-RANDOM"},
		&cli.StringSliceFlag{Name: "labels", Value: cli.NewStringSlice("self-hosted", "linux", "relay"), EnvVars: []string{"RELAY_LABELS"}, Usage: "runner labels (comma-separated)"},
		&cli.IntFlag{Name: "runner-group-id", Value: 1, EnvVars: []string{"RELAY_RUNNER_GROUP_ID"}, Usage: "runner group id (1: Default)"},
		&cli.DurationFlag{Name: "idle-timeout", Value: 5 * time.Minute, EnvVars: []string{"RELAY_IDLE_TIMEOUT"}, Usage: "stop and exit 0 when no job arrived within this"},
		&cli.DurationFlag{Name: "job-timeout", Value: 6 * time.Hour, EnvVars: []string{"RELAY_JOB_TIMEOUT"}, Usage: "stop a job that runs longer (exit 5); 0: no limit"},
		&cli.DurationFlag{Name: "stop-grace", Value: 30 * time.Second, EnvVars: []string{"RELAY_STOP_GRACE"}, Usage: "time the runner has to exit after SIGTERM before it is killed"},
		&cli.DurationFlag{Name: "orphan-age", Value: 15 * time.Minute, EnvVars: []string{"RELAY_ORPHAN_AGE"}, Usage: "remove offline runners of this prefix registered longer ago (left by killed replicas); 0: never"},
		&cli.BoolFlag{Name: "check-runner-version", Value: true, EnvVars: []string{"RELAY_CHECK_RUNNER_VERSION"}, Usage: "look up actions/runner's releases at start and warn when GitHub refuses the installed version (false: air-gapped servers)"},
		&cli.StringSliceFlag{Name: "pass-env", EnvVars: []string{"RELAY_PASS_ENV"}, Usage: "more variables the job may see (PATH, HOME, LANG, TZ, proxies and ACTIONS_RUNNER_HOOK_* always pass; RELAY_* and tokens never)"},
		&cli.StringFlag{Name: "log-format", EnvVars: []string{"RELAY_LOG_FORMAT"}, Usage: "json, text or github (default: github inside GitHub Actions, text on a terminal, else json)"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"RELAY_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
	}
}

func runnerCmd(ctx context.Context, o Options, ro runner.Options) error {
	logger, _, err := newLogger(o)
	if err != nil {
		return err
	}
	o = o.withChain(ctx, logger)
	ro.Logger, ro.HTTP, ro.Retrier = logger, o.httpClient(ctx), o.retrier()
	ro.Environ = os.Environ
	if reg := o.Getenv("RELAY_RUNNER_REGISTRATION_TOKEN"); reg != "" {
		ro.RegistrationToken = reg
		ro.Secrets = append(ro.Secrets, reg)
	}
	if ro.Token, err = runnerTokens(ctx, o, ro.Scope, ro.APIURL, &ro.Secrets); err != nil {
		return &runner.Error{Code: runner.ExitConfig, Err: err}
	}
	res, err := runner.Run(ctx, ro)
	if err != nil {
		return err
	}
	if res.ExitCode != runner.ExitOK {
		return &runner.Error{Code: res.ExitCode, Err: fmt.Errorf("runner %s: %s (job %q: %s)", res.Name, res.Outcome, res.Job, res.JobResult)}
	}
	return nil
}

// credentialEnv are the variables that give a runner credentials of its own.
var credentialEnv = []string{"RELAY_GITHUB_APP_ID", "RELAY_GITHUB_APP_KEY", "RELAY_GITHUB_APP_KEY_FILE", "RELAY_GITHUB_APP_KEY_VAULT_SECRET", "RELAY_GITHUB_TOKEN", "RELAY_RUNNER_REGISTRATION_TOKEN"}

// handedRunnerCmd runs the runner of a JIT config relay listener handed in: read once,
// the file removed where it can be, no other credential allowed beside it.
func handedRunnerCmd(ctx context.Context, o Options, ro runner.Options, file, secret string) error {
	logger, _, err := newLogger(o)
	if err != nil {
		return err
	}
	if file != "" && secret != "" {
		return &usageError{Err: errors.New("give the JIT config once: --jit-config-file or --jit-config-secret, not both")}
	}
	for _, k := range credentialEnv {
		if o.Getenv(k) != "" {
			return &runner.Error{Code: runner.ExitConfig, Err: fmt.Errorf("%s is set beside a handed-in JIT config: a runner relay listener starts holds no credential of its own; remove it from the job", k)}
		}
	}
	o = o.withChain(ctx, logger)
	var jit []byte
	switch {
	case file != "":
		if jit, err = os.ReadFile(file); err != nil {
			return &runner.Error{Code: runner.ExitConfig, Err: fmt.Errorf("--jit-config-file: %w (relay listener mounts it from the runner's Secret)", err)}
		}
		if err := os.Remove(file); err == nil { // a mounted Secret is read-only: it goes with the Job
			logger.Debug("JIT config file removed after reading", "file", file)
		}
	default:
		cred, err := managedIdentity(o)
		if err != nil {
			return &runner.Error{Code: runner.ExitConfig, Err: err}
		}
		if jit, err = runner.KeyVaultSecret(ctx, secret, cred, o.httpClient(ctx)); err != nil {
			return &runner.Error{Code: runner.ExitRegistration, Err: fmt.Errorf("--jit-config-secret: %w", err)}
		}
	}
	o.Redactor.Add(strings.TrimSpace(string(jit)))
	ro.JITConfig = string(jit)
	ro.Scope = runner.Scope{} // the config names the runner, its scale set and scope
	ro.Logger, ro.HTTP, ro.Retrier, ro.Environ = logger, o.httpClient(ctx), o.retrier(), os.Environ
	res, err := runner.Run(ctx, ro)
	if err != nil {
		return err
	}
	if res.ExitCode != runner.ExitOK {
		return &runner.Error{Code: res.ExitCode, Err: fmt.Errorf("runner %s: %s (job %q: %s)", res.Name, res.Outcome, res.Job, res.JobResult)}
	}
	return nil
}

// managedIdentity is the container's managed identity (AZURE_CLIENT_ID names a
// user-assigned one).
func managedIdentity(o Options) (*azidentity.ManagedIdentityCredential, error) {
	var opts *azidentity.ManagedIdentityCredentialOptions
	if cid := o.Getenv("AZURE_CLIENT_ID"); cid != "" {
		opts = &azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(cid)}
	}
	cred, err := azidentity.NewManagedIdentityCredential(opts)
	if err != nil {
		return nil, fmt.Errorf("managed identity: %w", err)
	}
	return cred, nil
}

// runnerTokens picks the API credential: a GitHub App (key from env, file or Azure Key Vault)
// minting installation tokens as they expire, or RELAY_GITHUB_TOKEN. Without either it
// returns nil (a platform registration token is then the only credential).
func runnerTokens(ctx context.Context, o Options, scope runner.Scope, api string, secrets *[]string) (runner.TokenFunc, error) {
	if t := o.Getenv("RELAY_GITHUB_TOKEN"); t != "" {
		*secrets = append(*secrets, t)
		return func(context.Context) (string, error) { return t, nil }, nil
	}
	id := o.Getenv("RELAY_GITHUB_APP_ID")
	if id == "" {
		return nil, nil
	}
	if scope.Enterprise != "" {
		return nil, errors.New("--enterprise: GitHub App installation tokens cannot manage enterprise runners; set RELAY_GITHUB_TOKEN (manage_runners:enterprise) or register at --org")
	}
	key := []byte(o.Getenv("RELAY_GITHUB_APP_KEY"))
	switch {
	case len(key) > 0:
	case o.Getenv("RELAY_GITHUB_APP_KEY_FILE") != "":
		b, err := os.ReadFile(o.Getenv("RELAY_GITHUB_APP_KEY_FILE"))
		if err != nil {
			return nil, fmt.Errorf("RELAY_GITHUB_APP_KEY_FILE: %w", err)
		}
		key = b
	case o.Getenv("RELAY_GITHUB_APP_KEY_VAULT_SECRET") != "":
		cred, err := managedIdentity(o)
		if err != nil {
			return nil, err
		}
		if key, err = runner.KeyVaultSecret(ctx, o.Getenv("RELAY_GITHUB_APP_KEY_VAULT_SECRET"), cred, nil); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("RELAY_GITHUB_APP_ID is set but no key: set RELAY_GITHUB_APP_KEY, RELAY_GITHUB_APP_KEY_FILE or RELAY_GITHUB_APP_KEY_VAULT_SECRET")
	}
	*secrets = append(*secrets, string(key))
	o.Redactor.Add(string(key))
	if err := github.CheckCredentials(id, key); err != nil {
		return nil, err // exit 2: a wrong id or key is fixed in the deployment, not by a retry
	}
	var mu sync.Mutex
	var cur *github.Token
	return func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if cur != nil && time.Until(cur.ExpiresAt) > 5*time.Minute {
			return cur.Value, nil
		}
		t, err := github.InstallationToken(ctx, github.AppOptions{AppID: id, PrivateKey: key, Repository: scope.Repo, Org: scope.Org, BaseURL: api, HTTP: o.httpClient(ctx), Retrier: o.retrier()})
		if err != nil {
			return "", err
		}
		o.Redactor.Add(t.Value)
		cur = t
		return t.Value, nil
	}, nil
}

// scopeFlags name where runners register: the runner and doctor commands share them.
func scopeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "repo", EnvVars: []string{"RELAY_REPO"}, Usage: "the runners' repository (OWNER/NAME)"},
		&cli.StringFlag{Name: "org", EnvVars: []string{"RELAY_ORG"}, Usage: "the runners' organization"},
		&cli.StringFlag{Name: "enterprise", EnvVars: []string{"RELAY_ENTERPRISE"}, Usage: "the runners' enterprise (needs RELAY_GITHUB_TOKEN with manage_runners:enterprise)"},
		&cli.StringFlag{Name: "github-api-url", Value: "https://api.github.com", EnvVars: []string{"RELAY_GITHUB_API_URL"}, Usage: "REST API root; GitHub Enterprise Server: https://HOST/api/v3"},
	}
}
