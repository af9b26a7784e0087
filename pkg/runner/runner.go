// Package runner is relay's ephemeral GitHub Actions runner entrypoint: it registers a
// runner without a stored token (a just-in-time config, or a registration token and
// config.sh where JIT is unavailable), starts the Actions runner as a child with a scrubbed
// environment, turns its output into structured lifecycle logs, enforces an idle deadline
// and a job timeout, and removes the registration on every way out.
package runner

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/relaydev/relay/internal/httpx"
)

// Exit codes: the contract with the platform's retry policy (docs/runner.md).
const (
	ExitOK           = 0   // the job succeeded, or no job came before the idle deadline
	ExitJobFailed    = 1   // the job ran and failed or was cancelled: retrying the replica will not help
	ExitConfig       = 2   // bad flags or environment, or a runner version GitHub refuses: fix the deployment
	ExitRegistration = 3   // registration failed (credentials, permissions, GitHub): retry with backoff
	ExitRunner       = 4   // the Actions runner failed to start or exited without a job result
	ExitJobTimeout   = 5   // the job ran past the hard timeout and was stopped
	ExitTerminated   = 143 // stopped by SIGTERM/SIGINT (the platform scaling in), after cleanup
)

// Scope is where the runner registers: exactly one of a repository, an organization or an
// enterprise.
type Scope struct {
	Repo       string // OWNER/NAME
	Org        string
	Enterprise string
}

func (s Scope) validate() error {
	n := 0
	for _, v := range []string{s.Repo, s.Org, s.Enterprise} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("name exactly one of --repo OWNER/NAME, --org ORG or --enterprise SLUG")
	}
	if s.Repo != "" && strings.Count(s.Repo, "/") != 1 {
		return fmt.Errorf("--repo %q is not OWNER/NAME", s.Repo)
	}
	return nil
}

// apiPath is the REST prefix of the scope.
func (s Scope) apiPath() string {
	switch {
	case s.Repo != "":
		return "/repos/" + s.Repo
	case s.Org != "":
		return "/orgs/" + s.Org
	default:
		return "/enterprises/" + s.Enterprise
	}
}

// webPath is the scope's path on the web host, what config.sh --url wants.
func (s Scope) webPath() string {
	switch {
	case s.Repo != "":
		return "/" + s.Repo
	case s.Org != "":
		return "/" + s.Org
	default:
		return "/enterprises/" + s.Enterprise
	}
}

func (s Scope) String() string { return strings.TrimPrefix(s.webPath(), "/") }

// Validate says whether exactly one well-formed scope is named.
func (s Scope) Validate() error { return s.validate() }

// WebURL is the scope's page on the web host of the API root apiURL, e.g.
// https://github.com/acme: what config.sh and the scale set service register against.
func (s Scope) WebURL(apiURL string) string {
	if apiURL == "" {
		apiURL = "https://api.github.com"
	}
	return webURL(strings.TrimRight(apiURL, "/")) + s.webPath()
}

// TokenFunc returns a GitHub API token that may manage the scope's runners (an App
// installation token, minted again when it is about to expire).
type TokenFunc func(ctx context.Context) (string, error)

// Options configure Run.
type Options struct {
	Scope Scope
	// APIURL is the REST root: https://api.github.com or https://HOST/api/v3.
	APIURL string
	// WebURL is the web root config.sh registers against (default: derived from APIURL).
	WebURL string
	// Token gives API access; RegistrationToken is one the platform handed in instead
	// (config.sh only, no JIT, no REST cleanup). One of them is required.
	Token             TokenFunc
	RegistrationToken string
	// JITConfig is a single-use runner config handed in (by relay listener): it names the
	// runner, needs no scope and no credential, and the listener removes the registration.
	JITConfig string
	// RunnerDir holds the Actions runner (run.sh, config.sh).
	RunnerDir  string
	NamePrefix string // the runner's name is PREFIX-YYYYMMDDhhmmss-RANDOM
	Labels     []string
	GroupID    int64  // runner group (default 1, the Default group)
	WorkFolder string // relative to RunnerDir (default _work)
	// IdleTimeout stops a runner that got no job within it (counted from the child's start).
	IdleTimeout time.Duration
	// JobTimeout stops a job that runs longer (0: no limit).
	JobTimeout time.Duration
	// StopGrace is how long the child has to exit after SIGTERM before it is killed.
	StopGrace time.Duration
	// OrphanAge: offline registrations with this prefix older than it are removed at start
	// (left behind by replicas that were killed); 0 disables the sweep.
	OrphanAge time.Duration
	// PassEnv names variables of relay's environment the child may see besides the base
	// set (PATH, HOME, LANG, ...); relay's own and token variables are never passed.
	PassEnv []string
	Getenv  func(string) string
	Environ func() []string
	// Secrets are values that must never reach the child's environment or arguments.
	Secrets []string
	// Reap makes Run reap every exited process, as PID 1 of a container must.
	Reap   bool
	Logger *slog.Logger
	HTTP   *http.Client
	// Retrier is the retry layer HTTP's transport includes (relay's chain); nil: one is added.
	Retrier *httpx.Retrier
	Now     func() time.Time
	// SkipVersionCheck leaves out the look-up of actions/runner's releases at start (an
	// air-gapped server); the installed version is still logged.
	SkipVersionCheck bool
	// Rand supplies the name's random suffix (tests fix it).
	Rand func() string
}

// checkAPIURL refuses an API root that cannot be one, before any request.
func checkAPIURL(s string) error {
	if s == "" {
		return nil // the default
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("--github-api-url %q is not an API root: use https://api.github.com or, for GitHub Enterprise Server, https://HOST/api/v3", s)
	}
	return nil
}

func (o *Options) validate() error {
	if o.JITConfig != "" {
		if o.Token != nil || o.RegistrationToken != "" {
			return errors.New("a runner handed a JIT config holds no other credential: remove RELAY_GITHUB_APP_*, RELAY_GITHUB_TOKEN and RELAY_RUNNER_REGISTRATION_TOKEN from its environment")
		}
		if _, _, err := jitRunner(o.JITConfig); err != nil {
			return err
		}
	} else if err := o.Scope.validate(); err != nil {
		return err
	}
	if err := checkAPIURL(o.APIURL); err != nil {
		return err
	}
	if o.Token == nil && o.RegistrationToken == "" && o.JITConfig == "" {
		return errors.New("no credentials: give a GitHub App (RELAY_GITHUB_APP_ID with RELAY_GITHUB_APP_KEY, RELAY_GITHUB_APP_KEY_FILE or RELAY_GITHUB_APP_KEY_VAULT_SECRET) or a registration token (RELAY_RUNNER_REGISTRATION_TOKEN)")
	}
	if o.Scope.Enterprise != "" && o.Token == nil {
		return errors.New("--enterprise needs an API token: enterprise runners cannot be registered with a registration token alone")
	}
	if o.RunnerDir == "" {
		return errors.New("--runner-dir is required: the directory holding the Actions runner (run.sh, config.sh)")
	}
	for _, f := range []string{"run.sh", "config.sh"} {
		if fi, err := os.Stat(filepath.Join(o.RunnerDir, f)); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("--runner-dir %s has no executable %s: point it at an unpacked actions/runner release", o.RunnerDir, f)
		}
	}
	if o.IdleTimeout <= 0 {
		return errors.New("--idle-timeout must be positive: a runner without a job must stop")
	}
	if o.JobTimeout < 0 {
		return errors.New("--job-timeout must not be negative")
	}
	if len(o.Labels) == 0 {
		o.Labels = []string{"self-hosted", "linux", "relay"}
	}
	if o.NamePrefix == "" {
		o.NamePrefix = "relay"
	}
	if o.GroupID == 0 {
		o.GroupID = 1
	}
	if o.WorkFolder == "" {
		o.WorkFolder = "_work"
	}
	if o.StopGrace <= 0 {
		o.StopGrace = 30 * time.Second
	}
	if o.APIURL == "" {
		o.APIURL = "https://api.github.com"
	}
	o.APIURL = strings.TrimRight(o.APIURL, "/")
	if o.WebURL == "" {
		o.WebURL = webURL(o.APIURL)
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Environ == nil {
		o.Environ = os.Environ
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = randomSuffix
	}
	return nil
}

// webURL derives the web root from the API root: api.github.com -> github.com,
// https://HOST/api/v3 -> https://HOST.
func webURL(api string) string {
	if strings.HasPrefix(api, "https://api.github.com") {
		return "https://github.com"
	}
	if i := strings.Index(api, "/api/v3"); i >= 0 {
		return api[:i]
	}
	return api
}

// jitRunner checks a JIT config's shape (base64 JSON of the runner's files, with .runner)
// and reads the runner's name and id from its .runner settings where it can ("" and 0
// otherwise: the runner reads its own files, relay only names it in its logs).
func jitRunner(encoded string) (string, int64, error) {
	bad := errors.New("the JIT config handed in is not one: it should be the encodedJITConfig the scale set service returned (base64 JSON holding .runner)")
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return "", 0, bad
	}
	var files map[string]string
	if json.Unmarshal(raw, &files) != nil || files[".runner"] == "" {
		return "", 0, bad
	}
	settings, _ := base64.StdEncoding.DecodeString(files[".runner"])
	var rs struct {
		AgentID   int64  `json:"agentId"`
		AgentName string `json:"agentName"`
	}
	json.Unmarshal(bytes.TrimPrefix(settings, []byte("\xef\xbb\xbf")), &rs) // .NET may write a BOM
	return rs.AgentName, rs.AgentID, nil
}

// Result is how a run ended.
type Result struct {
	ExitCode  int
	Outcome   string // job-succeeded, job-failed, no-job, terminated, job-timeout, runner-failed, registration-failed
	Name      string
	RunnerID  int64
	Job       string
	JobResult string
}

// Error is a failure with its exit code.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// secret records a value the child must never see (tokens minted during the run).
func (o *Options) secret(v string) {
	for _, s := range o.Secrets {
		if s == v {
			return
		}
	}
	o.Secrets = append(o.Secrets, v)
}
