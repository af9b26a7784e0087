// Package wire is relay's composition root: it decides the run's mode once, from the
// options and relay.yaml, and builds every implementation the steps get in their Env:
// the registry client and its HTTP chain, the builder, the signer and verifier, the SBOM
// generator and the publisher. The CLI parses flags into Options and calls Build.
package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	azpolicy "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	git "github.com/go-git/go-git/v5"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/github"
	"github.com/relaydev/relay/pkg/logging"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/release"
	"github.com/relaydev/relay/pkg/sbom"
	"github.com/relaydev/relay/pkg/source"
	"github.com/relaydev/relay/pkg/steps"
)

// snapshotEpoch is the commit time of --local's snapshot of a plain directory when
// SOURCE_DATE_EPOCH is unset: fixed, so the same files always give the same commit.
var snapshotEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// SecretEnv are variables whose values must never appear in logs.
var SecretEnv = []string{"GITHUB_TOKEN", "GH_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_RUNTIME_TOKEN", "SIGSTORE_ID_TOKEN", "RELAY_GITHUB_APP_KEY", "COSIGN_PASSWORD", "RELAY_SOURCE_TOKEN", "IDENTITY_HEADER", "DOCKERHUB_TOKEN", "RELAY_GITHUB_TOKEN", "RELAY_RUNNER_REGISTRATION_TOKEN",
	// what the KMS and cloud builders' credential chains read
	"VAULT_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "GOOGLE_OAUTH_ACCESS_TOKEN"}

// secretFileEnv name files whose contents are secrets (a service account key, a projected
// token): registered before anything runs, so an error that echoes them is masked.
var secretFileEnv = []string{"GOOGLE_APPLICATION_CREDENTIALS", "AZURE_FEDERATED_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "RELAY_GITHUB_APP_KEY_FILE", "RELAY_JIT_CONFIG_FILE"}

// AddSecretFiles registers the contents of the secret files the environment names: the
// whole file, and the credential fields of a JSON key file.
func AddSecretFiles(red *logging.Redactor, getenv func(string) string) {
	for _, k := range secretFileEnv {
		p := getenv(k)
		if p == "" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) > 1<<20 {
			continue // the client that needs it reports the problem
		}
		red.Add(strings.TrimSpace(string(b)))
		var fields map[string]any
		if json.Unmarshal(b, &fields) == nil {
			for _, f := range []string{"private_key", "private_key_id", "client_secret", "refresh_token"} {
				if v, ok := fields[f].(string); ok {
					red.Add(v)
				}
			}
		}
	}
}

// redactedTokens registers every identity token with the redactor as it is obtained,
// before it is sent anywhere.
type redactedTokens struct {
	attest.TokenSource
	red *logging.Redactor
}

func (r redactedTokens) Token(ctx context.Context) (string, error) {
	t, err := r.TokenSource.Token(ctx)
	r.red.Add(t)
	return t, err
}

// Options are what Build needs from the command line and the environment.
type Options struct {
	Config  string // relay.yaml's path, for messages
	State   string
	Local   bool
	DryRun  bool
	Out     string
	Jobs    int
	Replace bool
	Timeout time.Duration
	Getenv  func(string) string
	// Redactor learns every secret the wiring finds or mints.
	Redactor *logging.Redactor
	Logger   *slog.Logger
	// CorrelationID goes into every User-Agent and the provenance.
	CorrelationID string
	Version       string // relay's
	// Steps are the steps this run executes (empty: all); credentials for signing are
	// wired only when one of them signs or verifies.
	Steps []string
	// Inspect (with DryRun) wires for read-only checks only (relay doctor): the guarded
	// registry client and the configured builder, never run; no signer, no overlay.
	Inspect bool
	// Chain is the process's one HTTP chain; nil: Build, or the client asked for, makes it.
	Chain *httpx.Chain
}

// UsageError marks bad flags or arguments (exit 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Wired is what Build made: the steps' Env and what to release when the run ends.
type Wired struct {
	Env *steps.Env
	// DryRun is set for --dry-run: what stands in for the writers, and what they saw.
	DryRun  *DryRun
	cleanup func()
}

// Close releases what the wiring started (--local's sandbox registry).
func (w *Wired) Close() { w.cleanup() }

// Build wires the run o describes against cfg. The mode is decided here, once, and picks
// the implementations: --local's sandbox registry, source snapshot and ephemeral key;
// --dry-run's registry overlay, stand-in signer and recording publisher; or the real ones.
func Build(ctx context.Context, o Options, cfg *config.Config) (w *Wired, err error) {
	mode, err := mode(o)
	if err != nil {
		return nil, err
	}
	stateDir, err := filepath.Abs(filepath.Dir(o.State))
	if err != nil {
		return nil, err
	}
	w = &Wired{cleanup: func() {}}
	defer func() {
		if err != nil {
			w.Close()
			w = nil
		}
	}()
	if o.Chain == nil {
		o.Chain = NewChain(ctx, o, cfg.Registries, mode != steps.ModeRelease)
	}
	var overlay func(http.RoundTripper) (http.RoundTripper, error)
	if mode == steps.ModeDryRun && !o.Inspect {
		if w.DryRun, err = newDryRun(); err != nil {
			return w, err
		}
		w.cleanup, overlay = w.DryRun.close, w.DryRun.overlay
	}
	client, err := registryClient(ctx, o, cfg.Registries, mode != steps.ModeRelease, overlay)
	if err != nil {
		return w, err
	}
	if err := SourceURL(cfg, o.Config, mode); err != nil {
		return w, err
	}
	w.Env = newEnv(o, cfg, mode, client, stateDir)
	env := w.Env
	switch {
	case mode == steps.ModeLocal:
		err = wireLocal(ctx, w, o, cfg)
	case w.DryRun != nil:
		err = drySigning(ctx, env, cfg, o, w.DryRun)
	default:
		err = wireSigner(ctx, env, cfg, o, mode)
	}
	if err != nil {
		return w, err
	}
	if env.Signer != nil {
		o.Logger.Info("cosign classic .sig/.att", "enabled", env.Classic, "configured", cfg.Signing.Classic != nil)
	}
	if env.Builder, err = builder(ctx, cfg, o, mode, client, o.Logger); err != nil {
		return w, err
	}
	if w.DryRun != nil && cfg.Builder.Kind != "local" {
		env.Builder = dryBuilder{kind: cfg.Builder.Kind} // made, so its credentials were found; never run
	}
	budget, _ := cfg.SBOM.BudgetBytes() // validated with the config
	if env.SBOM, err = sbom.New(sbom.Options{Logger: o.Logger, Formats: cfg.SBOM.Formats, Budget: budget, Catalogers: cfg.SBOM.Catalogers, Tool: "relay", Version: o.Version,
		InsecureHosts: insecureHosts(cfg.Registries), Image: client.Image}); err != nil {
		return w, &config.Error{File: o.Config, Msg: err.Error()}
	}
	env.Publisher, err = publisher(ctx, o, cfg, mode, w.DryRun)
	return w, err
}

// mode is the run's mode, from the flags.
func mode(o Options) (steps.Mode, error) {
	switch {
	case o.Local && o.DryRun:
		return "", &UsageError{errors.New("--local and --dry-run cannot be combined: --local already writes only to its sandbox")}
	case o.Local:
		return steps.ModeLocal, nil
	case o.DryRun:
		return steps.ModeDryRun, nil
	}
	return steps.ModeRelease, nil
}

// newEnv is what every mode shares: the config, the registry client, the run's identity,
// and the source, whose credentials are registered with the redactor first.
func newEnv(o Options, cfg *config.Config, mode steps.Mode, client *oci.Client, stateDir string) *steps.Env {
	env := &steps.Env{
		Config:        cfg,
		Mode:          mode,
		Logger:        o.Logger,
		Registry:      client,
		Now:           time.Now,
		StateDir:      stateDir,
		SourceRepo:    cfg.Source.Repo,
		CorrelationID: o.CorrelationID,
		RunnerName:    logging.RunnerName(o.Getenv),
		Workflow:      Workflow(o.Getenv),
		Version:       o.Version,
		Jobs:          o.Jobs,
		MapRepository: func(s string) (name.Repository, error) { return name.NewRepository(s) },
	}
	if t := cfg.Source.TokenEnv; t != "" {
		env.SourceToken = o.Getenv(t)
		o.Redactor.Add(env.SourceToken)
	}
	if u, err := url.Parse(cfg.Source.Repo); err == nil && u.User != nil {
		// https://user:TOKEN@host: the password is the secret, the user name only names
		// an account (masking a common one would garble unrelated text); in
		// https://TOKEN@host the lone user part is the token.
		if pw, ok := u.User.Password(); ok {
			o.Redactor.Add(pw)
		} else if u.Scheme == "http" || u.Scheme == "https" {
			o.Redactor.Add(u.User.Username())
		}
	}
	if isLocalPath(cfg.Source.Repo) {
		env.SourceRepo = cfg.ResolvePath(cfg.Source.Repo)
	}
	return env
}

// wireLocal points every repository into the sandbox registry, the source at the example's
// snapshot when it is no git repository, and signs with the sandbox's own key.
func wireLocal(ctx context.Context, w *Wired, o Options, cfg *config.Config) error {
	env := w.Env
	sb, err := oci.StartSandbox(ctx, filepath.Join(env.StateDir, "local", "registry"), o.Logger)
	if err != nil {
		return err
	}
	w.cleanup = func() { sb.Close() }
	addr := sb.Addr()
	env.MapRepository = func(s string) (name.Repository, error) {
		// Keep the configured host as a path component so two targets stay two
		// repositories; a port's colon is not allowed in a path (localhost:5000 -> localhost_5000).
		host, rest, _ := strings.Cut(strings.ToLower(s), "/")
		return name.NewRepository(addr + "/" + strings.ReplaceAll(host, ":", "_") + "/" + rest)
	}
	o.Logger.Info("local sandbox registry", "addr", addr)
	if env.SourceRepo, err = localSource(ctx, cfg, env.StateDir, o.Getenv, o.Logger); err != nil {
		return err
	}
	key, err := attest.LoadOrCreateKey(filepath.Join(env.StateDir, "local", "signing-key.pem"))
	if err != nil {
		return err
	}
	return useKey(env, key)
}

const errEphemeral = "signing.mode ephemeral is only for --local: nobody could verify an ephemeral key later"

// wireSigner is a real run's signer and verifier, made only when a selected step signs
// or verifies, so `relay run --only checkout,build` needs no identity token or key.
func wireSigner(ctx context.Context, env *steps.Env, cfg *config.Config, o Options, mode steps.Mode) error {
	switch cfg.Signing.Mode {
	case "ephemeral":
		return &config.Error{File: o.Config, Msg: errEphemeral, Fix: "use signing.mode keyless or key, or run with --local"}
	case "keyless", "key":
	default:
		if mode == steps.ModeRelease {
			return &config.Error{File: o.Config, Msg: fmt.Sprintf("signing.mode %s is not available in this build of relay", cfg.Signing.Mode), Fix: "use signing.mode keyless or key"}
		}
		return nil
	}
	if mode != steps.ModeRelease || !signs(o.Steps) {
		return nil
	}
	if cfg.Signing.Mode == "keyless" {
		s, v, err := keyless(ctx, cfg, o, o.Logger)
		if err != nil {
			return err
		}
		env.Signer, env.Verifier = s, v
		env.Classic = classicWanted(cfg, s.CanSignClassic())
		return nil
	}
	k, err := signingKey(ctx, cfg, o)
	if err != nil {
		return err
	}
	if err := useKey(env, k); err != nil {
		return err
	}
	if cfg.Signing.KeyTLog() {
		return keyTransparencyLog(ctx, env, k, cfg, o, o.Logger)
	}
	return nil
}

// publisher is where the release goes: the dry run's recorder, a GitHub release, or a
// directory (--out, release.dir, and always with --local).
func publisher(ctx context.Context, o Options, cfg *config.Config, mode steps.Mode, dry *DryRun) (release.Publisher, error) {
	out := o.Out
	if !o.Local && cfg.Release.Dir != "" {
		out = cfg.ResolvePath(cfg.Release.Dir)
	}
	if dry != nil {
		rec, err := dryPublisher(ctx, cfg, o, out, dry)
		if err != nil {
			return nil, err
		}
		dry.Publisher = rec
		o.Logger.Info("dry run: registry writes go to an overlay, signatures are an ephemeral key's, the release is recorded", "scratch", dry.dir)
		return rec, nil
	}
	if !o.Local && cfg.Release.Target == "github" && mode == steps.ModeRelease && releases(o.Steps) {
		tok, err := githubToken(ctx, o, cfg)
		if err != nil {
			return nil, err
		}
		chain := o.chain(ctx)
		gh, err := release.NewGitHub(release.GitHubOptions{
			Repository: cfg.Release.GitHub.Repository, BaseURL: cfg.Release.GitHub.BaseURL, Token: tok,
			Replace: o.Replace, Logger: o.Logger, Transport: chain.Transport(), Retrier: chain.Retrier(),
		})
		if err != nil {
			return nil, &config.Error{File: o.Config, Msg: err.Error(), Fix: "set GITHUB_TOKEN to a token with contents: write on " + cfg.Release.GitHub.Repository}
		}
		return gh, nil
	}
	return release.NewDir(out, o.Logger)
}

// RegistryClient builds the one registry client of a command: retries (with the config's
// per-registry budgets) over a transport that lets only the config's insecure hosts skip
// TLS, the write guard for --local and --dry-run, and the User-Agent with the correlation id.
func RegistryClient(ctx context.Context, o Options, registries []config.Registry, guard bool) (*oci.Client, error) {
	return registryClient(ctx, o, registries, guard, nil)
}

// registryClient is RegistryClient with, for --dry-run, the overlay that keeps the writes
// above the guard, which then sees none.
func registryClient(ctx context.Context, o Options, registries []config.Registry, guard bool, overlay func(http.RoundTripper) (http.RoundTripper, error)) (*oci.Client, error) {
	logger := o.Logger
	chain := o.Chain
	if chain == nil {
		chain = NewChain(ctx, o, registries, guard)
	}
	var overlayErr error
	rt := chain.With(func(next http.RoundTripper) http.RoundTripper {
		if overlay != nil {
			next, overlayErr = overlay(next)
		}
		return registryHosts(next, chain.Retrier())
	})
	if overlayErr != nil {
		return nil, overlayErr
	}
	client, err := oci.New(oci.WithTransport(rt), oci.WithLogger(logger), oci.WithJobs(o.Jobs),
		oci.WithUserAgent(userAgent(o.Version, o.CorrelationID)), oci.WithKeychain(oci.Keychain(o.Getenv, chain.Credentials())))
	if err != nil {
		return nil, &UsageError{err}
	}
	return client, nil
}

// insecureHosts are the registries relay.yaml lets skip TLS verification.
func insecureHosts(registries []config.Registry) []string {
	var out []string
	for _, r := range registries {
		if r.Insecure {
			out = append(out, r.Host)
		}
	}
	return out
}

// NewChain is the HTTP chain every client of a run shares (internal/httpx): relay's
// User-Agent with the correlation id, the write guard when guard, a span per request, one
// retry layer with relay.yaml's budget per registry, --timeout (or a registry's own)
// without progress, and one connection pool that lets only the config's insecure
// registries skip TLS.
func NewChain(ctx context.Context, o Options, registries []config.Registry, guard bool) *httpx.Chain {
	budgets, timeouts := map[string]time.Duration{}, map[string]time.Duration{}
	var hosts []string
	for _, r := range registries {
		hosts = append(hosts, r.Host)
		if b, _ := r.Budget(); b > 0 { // validated with the config
			budgets[r.Host] = b
		}
		if d, _ := r.IdleTimeout(); d > 0 {
			timeouts[r.Host] = d
		}
	}
	c := httpx.NewChain(httpx.ChainOptions{
		UserAgent: userAgent(o.Version, o.CorrelationID), Timeout: o.Timeout, Timeouts: timeouts,
		Retry: httpx.RetryOptions{Logger: o.Logger, Budgets: budgets}, Guard: guard,
		Base: oci.Insecure(oci.NewTransport(), insecureHosts(registries)), Trace: ctx,
	})
	c.Retrier().Name("registry", hosts...)
	return c
}

// registryHosts names the hosts the registry client talks to in the retry layer's logs.
func registryHosts(next http.RoundTripper, r *httpx.Retrier) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		r.Name("registry", req.URL.Host)
		return next.RoundTrip(req)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// chain is o's HTTP chain, or a new unguarded one for a command that makes one client.
func (o Options) chain(ctx context.Context) *httpx.Chain {
	if o.Chain != nil {
		return o.Chain
	}
	return NewChain(ctx, o, nil, false)
}

// HTTPClient is the client of relay's other API calls (the runner's GitHub API, App
// tokens) over o's chain.
func HTTPClient(ctx context.Context, o Options) *http.Client { return o.chain(ctx).Client() }

func userAgent(version, cid string) string {
	return fmt.Sprintf("relay/%s (correlation_id=%s)", version, cid)
}

func isLocalPath(repo string) bool {
	return !strings.Contains(repo, "://") && !strings.Contains(repo, "@")
}

// localSource returns the repository --local clones: the configured local path when it is a
// git repository, else a snapshot of the directory made into one (the bundled example).
func localSource(ctx context.Context, cfg *config.Config, stateDir string, getenv func(string) string, logger *slog.Logger) (string, error) {
	if !isLocalPath(cfg.Source.Repo) {
		return cfg.Source.Repo, nil
	}
	dir := cfg.ResolvePath(cfg.Source.Repo)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", &config.Error{File: "relay.yaml", Msg: fmt.Sprintf("source.repo %s is not a directory", dir), Fix: "point source.repo at the directory or git URL to release"}
	}
	if _, err := git.PlainOpen(dir); err == nil {
		return dir, nil
	}
	when := snapshotEpoch
	if s := getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return "", &UsageError{fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a Unix time in seconds", s)}
		}
		when = time.Unix(n, 0).UTC()
	}
	snap := filepath.Join(stateDir, "local", "source")
	rel, _ := filepath.Rel(dir, stateDir)
	exclude := []string{"dist", ".relay"}
	if top := strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]; top != "" && top != "." && top != ".." {
		exclude = append(exclude, top)
	}
	commit, err := source.Snapshot(ctx, logger, source.SnapshotOptions{Src: dir, Dst: snap, Tag: cfg.Source.Ref, When: when, Exclude: exclude})
	if err != nil {
		return "", err
	}
	logger.Info("source is not a git repository: snapshot made for --local", "dir", dir, "commit", commit, "ref", cfg.Source.Ref)
	return snap, nil
}

// SourceURL settles source.url, the page the provenance and the image label name: for a
// local repository without one, its origin remote. A release must name one a consumer can
// open; --local, whose images never leave the machine, names none rather than a path.
func SourceURL(cfg *config.Config, file string, mode steps.Mode) error {
	s := &cfg.Source
	if s.URL == "" && isLocalPath(s.Repo) {
		if repo, err := git.PlainOpen(cfg.ResolvePath(s.Repo)); err == nil {
			if r, err := repo.Remote("origin"); err == nil && len(r.Config().URLs) > 0 {
				s.URL = config.BrowseURL(r.Config().URLs[0])
			}
		}
	}
	if s.URL == "" && mode != steps.ModeLocal {
		return &config.Error{File: file, Msg: fmt.Sprintf("source.repo %s is a local path with no remote a consumer can open, and the provenance and image label must name one", s.Repo),
			Fix: "set `source.url: https://…` to the repository's page, or add an origin remote; inside GitHub Actions relay uses $GITHUB_SERVER_URL/$GITHUB_REPOSITORY"}
	}
	return nil
}

// ActionsFallback is what a GitHub Actions run supplies when relay.yaml leaves the source
// out: the workflow's repository, and the pushed ref. A tag push releases the tag; any
// other event (a branch push, a pull request) releases the exact commit it ran for, which
// is then versioned by its short commit.
func ActionsFallback(getenv func(string) string) config.Fallback {
	if getenv("GITHUB_ACTIONS") != "true" {
		return config.Fallback{}
	}
	fb := config.Fallback{TokenEnv: "GITHUB_TOKEN", From: "GitHub Actions"}
	if server, repo := getenv("GITHUB_SERVER_URL"), getenv("GITHUB_REPOSITORY"); server != "" && repo != "" {
		fb.URL = strings.TrimSuffix(server, "/") + "/" + repo
		fb.Repo = fb.URL + ".git"
	}
	ref, sha := getenv("GITHUB_REF"), getenv("GITHUB_SHA")
	switch {
	case strings.HasPrefix(ref, "refs/tags/"):
		fb.Ref = strings.TrimPrefix(ref, "refs/tags/")
	case sha != "":
		fb.Ref = sha
	default:
		fb.Ref = strings.TrimPrefix(ref, "refs/heads/")
	}
	return fb
}

// Workflow names what runs relay: the workflow file inside GitHub Actions.
func Workflow(getenv func(string) string) string {
	if w := getenv("GITHUB_WORKFLOW_REF"); w != "" {
		return w
	}
	return "relay run"
}

// builder makes the configured builder; --local always builds locally.
func builder(ctx context.Context, cfg *config.Config, o Options, mode steps.Mode, client *oci.Client, logger *slog.Logger) (build.Builder, error) {
	switch {
	case cfg.Builder.Kind == "local" || mode == steps.ModeLocal:
		cache := filepath.Join(filepath.Dir(o.State), "cache", "go")
		if mode == steps.ModeDryRun {
			cache = "" // a dry run writes nothing outside its scratch directory
		}
		return build.NewLocal(build.LocalOptions{Client: client, Logger: logger, ConfigDir: cfg.Dir, Jobs: o.Jobs, CacheDir: cache})
	case cfg.Builder.Kind == "acr":
		a := cfg.Builder.ACR
		timeout, _ := a.Timeout.Value() // parsed and validated with the config
		// The workload's identity: workload identity federation, managed identity, or the
		// AZURE_* variables of a service principal; relay.yaml holds no secret.
		// Its token requests go through relay's chain (the SDK's own retries off), unguarded:
		// they mint a credential and write nothing.
		cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions: azpolicy.ClientOptions{Transport: o.chain(ctx).Credentials(), Retry: azpolicy.RetryOptions{MaxRetries: -1}}})
		if err != nil {
			return nil, &config.Error{File: o.Config, Msg: "builder acr: no Azure identity: " + err.Error(), Fix: "run with a workload or managed identity (docs/config.md, Builders)"}
		}
		return build.NewACR(build.ACROptions{SubscriptionID: a.Subscription, ResourceGroup: a.ResourceGroup, Registry: a.Registry,
			ARMEndpoint: a.ARMEndpoint, Timeout: timeout, Credential: cred, Client: client, Logger: logger, HTTP: o.chain(ctx).Client(), Retrier: o.chain(ctx).Retrier()})
	case cfg.Builder.Kind == "gcb":
		g := cfg.Builder.GCB
		timeout, _ := g.Timeout.Value() // parsed and validated with the config
		// Application default credentials: the metadata server (GKE workload identity,
		// Cloud Run), workload identity federation, or GOOGLE_APPLICATION_CREDENTIALS.
		tokens, err := googleTokens(ctx, o.chain(ctx).Credentials(), o.Getenv)
		if err != nil {
			return nil, &config.Error{File: o.Config, Msg: "builder gcb: no Google credentials: " + err.Error(), Fix: "run with workload identity or application default credentials (docs/config.md, Builders)"}
		}
		opts := build.GCBOptions{Project: g.Project, Location: g.Location, Bucket: g.Bucket, Timeout: timeout, Tokens: tokens, Client: client, Logger: logger,
			HTTP: o.chain(ctx).Client(), Retrier: o.chain(ctx).Retrier()}
		if e := g.Endpoints; e != nil {
			opts.CloudBuildEndpoint, opts.StorageEndpoint, opts.LoggingEndpoint, opts.ResourceManagerEndpoint = e.CloudBuild, e.Storage, e.Logging, e.ResourceManager
		}
		return build.NewGCB(opts)
	case cfg.Builder.Kind == "codebuild":
		cb := cfg.Builder.CodeBuild
		timeout, _ := cb.Timeout.Value() // parsed and validated with the config
		// The AWS default chain: environment, web identity (EKS), container credentials
		// (ECS, CodeBuild itself), instance role.
		// The SDK's own retryer is off: relay's chain is the one retry layer.
		awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithHTTPClient(o.chain(ctx).Client()),
			awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }))
		if err != nil {
			return nil, &config.Error{File: o.Config, Msg: "builder codebuild: AWS configuration: " + err.Error(), Fix: "run with a role the workload assumes, and AWS_REGION set"}
		}
		return build.NewCodeBuild(build.CodeBuildOptions{Project: cb.Project, Bucket: cb.Bucket, Timeout: timeout, AWS: awsCfg, Client: client, Logger: logger})
	default:
		return nil, &config.Error{File: o.Config, Msg: fmt.Sprintf("builder.kind %s is not available in this build of relay", cfg.Builder.Kind), Fix: "use builder.kind local, acr, gcb or codebuild, or --local, which always uses the local builder (docs/roadmap.md)"}
	}
}

// signingKey opens signing.key: a KMS key by URI (awskms://, gcpkms://, azurekms://,
// hashivault://), else a cosign key file decrypted with COSIGN_PASSWORD.
func signingKey(ctx context.Context, cfg *config.Config, o Options) (*attest.KeySigner, error) {
	if attest.IsKMSKey(cfg.Signing.Key) {
		k, err := attest.LoadKMSKey(ctx, cfg.Signing.Key)
		if err != nil {
			return nil, &config.Error{File: o.Config, Msg: err.Error(), Fix: "check signing.key and that the KMS credential may read the key's public key and sign with it (docs/config.md, Keys)"}
		}
		return k, nil
	}
	k, err := attest.LoadCosignKey(cfg.ResolvePath(cfg.Signing.Key), []byte(o.Getenv("COSIGN_PASSWORD")))
	if err != nil {
		return nil, &config.Error{File: o.Config, Msg: err.Error(), Fix: "point signing.key at the cosign.key of `cosign generate-key-pair` and set COSIGN_PASSWORD"}
	}
	return k, nil
}

// useKey makes k the run's signer: bundles are verified against its public key, which is
// published with the release.
func useKey(env *steps.Env, k *attest.KeySigner) error {
	tm, err := k.TrustedMaterial()
	if err != nil {
		return err
	}
	if env.Verifier, err = attest.NewKeyVerifier(tm); err != nil {
		return err
	}
	if env.PublicKey, err = k.PublicKeyPEM(); err != nil {
		return err
	}
	env.Signer = k
	env.Classic = classicWanted(env.Config, true)
	return nil
}

// classicWanted resolves signing.classic: unset means wherever the signer can, so that
// cosign v2's default verify (classic only) passes as well as v3's.
func classicWanted(cfg *config.Config, can bool) bool {
	if cfg.Signing.Classic == nil {
		return can
	}
	return *cfg.Signing.Classic
}

// githubToken is GITHUB_TOKEN (or GH_TOKEN), else an installation token minted from a
// GitHub App (RELAY_GITHUB_APP_ID with RELAY_GITHUB_APP_KEY or RELAY_GITHUB_APP_KEY_FILE):
// no long-lived token needs to exist. A minted token is redacted from every output.
func githubToken(ctx context.Context, o Options, cfg *config.Config) (string, error) {
	for _, k := range []string{"GITHUB_TOKEN", "GH_TOKEN"} {
		if t := o.Getenv(k); t != "" {
			return t, nil
		}
	}
	id := o.Getenv("RELAY_GITHUB_APP_ID")
	if id == "" {
		return "", nil // NewGitHub says a token is needed
	}
	key := []byte(o.Getenv("RELAY_GITHUB_APP_KEY"))
	if f := o.Getenv("RELAY_GITHUB_APP_KEY_FILE"); len(key) == 0 && f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("RELAY_GITHUB_APP_KEY_FILE: %w", err)
		}
		key = b
	}
	chain := o.chain(ctx)
	tok, err := github.InstallationToken(ctx, github.AppOptions{AppID: id, PrivateKey: key, Repository: cfg.Release.GitHub.Repository, BaseURL: cfg.Release.GitHub.BaseURL,
		HTTP: chain.Credentials(), Retrier: chain.Retrier()})
	if err != nil {
		return "", err
	}
	o.Redactor.Add(tok.Value)
	return tok.Value, nil
}

// sigstoreInstance is the Sigstore instance signatures go to: a private one from
// signing.trusted_root and signing.signing_config, else the public-good instance, whose
// trust material comes from its TUF repository.
func sigstoreInstance(cfg *config.Config, o Options) (root.TrustedMaterial, *root.SigningConfig, bool, error) {
	if cfg.Signing.TrustedRoot == "" {
		tr, err := root.FetchTrustedRoot()
		if err != nil {
			return nil, nil, true, fmt.Errorf("fetching the public-good Sigstore trusted root (TUF): %w", err)
		}
		sc, err := root.FetchSigningConfig()
		if err != nil {
			return nil, nil, true, fmt.Errorf("fetching the public-good Sigstore signing config (TUF): %w", err)
		}
		return tr, sc, true, nil
	}
	tr, err := root.NewTrustedRootFromPath(cfg.ResolvePath(cfg.Signing.TrustedRoot))
	if err != nil {
		return nil, nil, false, &config.Error{File: o.Config, Msg: fmt.Sprintf("signing.trusted_root %s: %v", cfg.Signing.TrustedRoot, err), Fix: "point it at a trusted_root.json (cosign trusted-root create makes one)"}
	}
	sc, err := root.NewSigningConfigFromPath(cfg.ResolvePath(cfg.Signing.SigningConfig))
	if err != nil {
		return nil, nil, false, &config.Error{File: o.Config, Msg: fmt.Sprintf("signing.signing_config %s: %v", cfg.Signing.SigningConfig, err), Fix: "point it at a signing_config.json (cosign signing-config create makes one)"}
	}
	return tr, sc, false, nil
}

// keyTransparencyLog logs the key's signatures in the instance's Rekor, as cosign does by
// default, and verifies the run's bundles with their entries.
func keyTransparencyLog(ctx context.Context, env *steps.Env, k *attest.KeySigner, cfg *config.Config, o Options, logger *slog.Logger) error {
	tm, sc, public, err := sigstoreInstance(cfg, o)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return err
		}
		return fmt.Errorf("signing.tlog: %w (fix: name a private Sigstore instance with signing.trusted_root and signing.signing_config, or set signing.tlog: false to sign without a transparency log)", err)
	}
	if public && !cfg.Signing.AllowPublicLog {
		if err := keyPrivateRepository(ctx, cfg, o, logger); err != nil {
			return err
		}
	}
	budget, _ := cfg.Signing.Budget() // validated with the config
	chain := o.chain(ctx)
	if err := k.UseTransparencyLog(attest.KeyLogOptions{SigningConfig: sc, TrustedRoot: tm, Budget: budget, Logger: logger, Transport: chain.Transport(), Retrier: chain.Retrier()}); err != nil {
		return &config.Error{File: o.Config, Msg: "signing.tlog: " + err.Error(), Fix: "name a signing config with a Rekor log, or set signing.tlog: false (consumers then need cosign's --insecure-ignore-tlog)"}
	}
	keyTM, err := k.TrustedMaterial()
	if err != nil {
		return err
	}
	if env.Verifier, err = attest.NewKeyLogVerifier(keyTM, tm); err != nil {
		return err
	}
	if cfg.Signing.Classic != nil && *cfg.Signing.Classic && !k.CanSignClassic() {
		return &config.Error{File: o.Config, Msg: "signing.classic: " + attest.ErrClassicNeedsRekorV1.Error(), Fix: "remove signing.classic, or set signing.tlog: false"}
	}
	env.Classic = classicWanted(cfg, k.CanSignClassic())
	logger.Info("key signatures go to the transparency log", "rekor_v1", k.CanSignClassic())
	return nil
}

// keyPrivateRepository applies keyless signing's rule to key signatures bound for the
// public log: a private or internal repository's signatures stay out of it unless
// signing.allow_public_log. The repository's visibility is read from the workflow's
// identity token when the job may have one; without one it cannot be told (and a key's
// entries name no repository), which is logged.
func keyPrivateRepository(ctx context.Context, cfg *config.Config, o Options, logger *slog.Logger) error {
	ts, err := tokenSource(cfg, o)
	if err != nil {
		logger.Info("key signatures go to the public Rekor; the repository's visibility is unknown without an identity token (entries hold the key and digests only)")
		return nil
	}
	tok, err := ts.Token(ctx)
	if err != nil {
		logger.Info("key signatures go to the public Rekor; no identity token to read the repository's visibility from", "error", err)
		return nil
	}
	if err := attest.PrivateRepositoryError(tok); err != nil {
		return &config.Error{File: o.Config, Msg: "signing.tlog: " + err.Error(), Fix: "set signing.allow_public_log: true, name a private Sigstore instance, or set signing.tlog: false"}
	}
	return nil
}

// keyless builds the keyless signer and the verifier of the run's own identity.
func keyless(ctx context.Context, cfg *config.Config, o Options, logger *slog.Logger) (*attest.KeylessSigner, *attest.Verifier, error) {
	tm, sc, public, err := sigstoreInstance(cfg, o)
	if err != nil {
		return nil, nil, err
	}
	tokens, err := tokenSource(cfg, o)
	if err != nil {
		return nil, nil, err
	}
	budget, _ := cfg.Signing.Budget() // validated with the config
	s, err := attest.NewKeylessSigner(attest.KeylessOptions{
		SigningConfig: sc, TrustedRoot: tm, Tokens: tokens, Budget: budget, Logger: logger, Transport: o.chain(ctx).Transport(), Retrier: o.chain(ctx).Retrier(),
		PublicLog: public, AllowPrivateInPublicLog: cfg.Signing.AllowPublicLog,
	})
	if err != nil {
		return nil, nil, &config.Error{File: o.Config, Msg: err.Error(), Fix: "check the Sigstore services in signing.signing_config"}
	}
	if cfg.Signing.Classic != nil && *cfg.Signing.Classic && !s.CanSignClassic() {
		return nil, nil, &config.Error{File: o.Config, Msg: "signing.classic: " + attest.ErrClassicNeedsRekorV1.Error(), Fix: "remove signing.classic, or sign with a key"}
	}
	return s, attest.NewSignerVerifier(tm, s, !s.UsesTransparencyLog()), nil
}

// signs says whether the selected steps (none: all) sign or verify, so that `relay run
// --only checkout,build,copy` needs no identity token or key password.
// releases reports whether the run includes the release step (only it needs the release
// token: a build-only run of a GitHub-released config needs none).
func releases(selected []string) bool {
	return len(selected) == 0 || slices.Contains(selected, "release")
}

func signs(selected []string) bool {
	if len(selected) == 0 {
		return true
	}
	for _, s := range selected {
		switch s {
		case "sign", "sbom", "provenance", "verify", "release":
			return true
		}
	}
	return false
}

// tokenSource is where keyless signing's identity tokens come from (signing.token_file is
// relative to the config file).
func tokenSource(cfg *config.Config, o Options) (attest.TokenSource, error) {
	f := cfg.Signing.TokenFile
	if f != "" {
		f = cfg.ResolvePath(f)
	}
	ts, err := attest.TokenSourceFromEnv(o.Getenv, f, nil)
	if err != nil {
		return nil, err
	}
	return redactedTokens{TokenSource: ts, red: o.Redactor}, nil
}

// CredentialChecks are --dry-run's read-only checks of what signing and publishing need
// from the environment: an OIDC token source and readable trust files for keyless signing,
// a decryptable key for key signing, a token or GitHub App for a GitHub release. Nothing is
// requested from Fulcio or GitHub.
func CredentialChecks(ctx context.Context, o Options, cfg *config.Config) []steps.Finding {
	var out []steps.Finding
	add := func(check string, err error, note string) {
		if err != nil {
			out = append(out, steps.Finding{Check: check, Note: err.Error()})
			return
		}
		out = append(out, steps.Finding{Check: check, OK: true, Note: note})
	}
	switch cfg.Signing.Mode {
	case "keyless":
		ts, err := tokenSource(cfg, o)
		note := ""
		if err == nil {
			note = "identity token from " + ts.Name()
		}
		add("signing identity (keyless)", err, note)
		if cfg.Signing.TrustedRoot != "" {
			_, err := root.NewTrustedRootFromPath(cfg.ResolvePath(cfg.Signing.TrustedRoot))
			add("signing.trusted_root "+cfg.Signing.TrustedRoot, err, "parses")
			_, err = root.NewSigningConfigFromPath(cfg.ResolvePath(cfg.Signing.SigningConfig))
			add("signing.signing_config "+cfg.Signing.SigningConfig, err, "parses")
		}
	case "key":
		_, f := keyCheck(ctx, cfg, o)
		out = append(out, f)
	}
	return append(out, githubCredentialCheck(o, cfg)...)
}

// githubCredentialCheck says whether there is a credential for a GitHub release.
func githubCredentialCheck(o Options, cfg *config.Config) []steps.Finding {
	if cfg.Release.Target != "github" || cfg.Release.GitHub == nil {
		return nil
	}
	f := steps.Finding{Check: "GitHub release credentials for " + cfg.Release.GitHub.Repository, OK: true, Note: "GITHUB_TOKEN is set (its permissions are checked when the release step runs)"}
	switch {
	case o.Getenv("GITHUB_TOKEN") != "" || o.Getenv("GH_TOKEN") != "":
	case o.Getenv("RELAY_GITHUB_APP_ID") != "" && (o.Getenv("RELAY_GITHUB_APP_KEY") != "" || o.Getenv("RELAY_GITHUB_APP_KEY_FILE") != ""):
		f.Note = "a GitHub App installation token will be minted"
	default:
		f.OK, f.Note = false, "no GITHUB_TOKEN, GH_TOKEN or GitHub App (RELAY_GITHUB_APP_ID with RELAY_GITHUB_APP_KEY[_FILE]): the release step needs one with contents: write"
	}
	return []steps.Finding{f}
}

// keyCheck opens signing.key as signing would: a file must decrypt, a KMS key is asked for
// its public key, which proves the credential and the key.
func keyCheck(ctx context.Context, cfg *config.Config, o Options) (*attest.KeySigner, steps.Finding) {
	f := steps.Finding{Check: "signing key " + cfg.Signing.Key}
	k, err := signingKey(ctx, cfg, o)
	if err != nil {
		f.Note = err.Error()
		return nil, f
	}
	f.OK, f.Note = true, "decrypts; key "+k.Hint()
	if attest.IsKMSKey(cfg.Signing.Key) {
		f.Note = "the KMS returned its public key " + k.Hint() + " (whether the credential may sign shows at the sign step)"
	}
	return k, f
}
