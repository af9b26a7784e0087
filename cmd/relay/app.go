package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/internal/telemetry"
	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/logging"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/runner"
	"github.com/relaydev/relay/pkg/steps"
)

// Exit codes: the contract with CI and container platforms (docs/cli.md).
const (
	exitOK          = 0
	exitStepFailed  = 1
	exitUsage       = 2
	exitMissing     = 3
	exitCannotCheck = 4 // relay verify, verify-blob: what to check could not be read
	exitInterrupted = 130
)

// usageError marks bad flags or arguments.
type usageError = wire.UsageError

// exitCode decides the process exit code from the error, at the edge only.
func exitCode(err error) int {
	var (
		ue *usageError
		ce *config.Error
		se *steps.StateError
		le *steps.LockedError
		mi *steps.MissingInputError
	)
	var re *runner.Error
	var pi interface{ PermanentInput() bool }
	var cc *cannotCheckError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &cc):
		return exitCannotCheck
	case errors.As(err, &re):
		return re.Code
	case errors.Is(err, steps.ErrInterrupted), errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.As(err, &mi):
		return exitMissing
	case errors.As(err, &ue), errors.As(err, &ce), errors.As(err, &se), errors.As(err, &le):
		return exitUsage
	case errors.As(err, &pi) && pi.PermanentInput():
		return exitUsage // a ref the repository lacks, a missing file: a retry fails the same way
	default:
		return exitStepFailed
	}
}

// run is main without the process: tests call it with their own args, streams and env.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	// Secrets are known before anything can print them, the final error line included.
	red := logging.NewRedactor()
	for _, k := range wire.SecretEnv {
		red.Add(getenv(k))
	}
	wire.AddSecretFiles(red, getenv)
	// One correlation id for the whole process (a generated one would differ per call).
	cid := logging.CorrelationID(getenv)
	env := getenv
	getenv = func(k string) string {
		if k == "RELAY_CORRELATION_ID" {
			return cid
		}
		return env(k)
	}
	ctx, tel, terr := telemetry.Start(ctx, telemetry.Options{Getenv: getenv, Version: version, Command: commandName(args),
		Attributes: []attribute.KeyValue{attribute.String("cicd.pipeline.name", wire.Workflow(getenv)), attribute.String("cicd.pipeline.run.id", cid)}})
	if terr == nil {
		terr = telemetry.CheckParent(ctx, getenv)
	}
	if terr != nil {
		fmt.Fprintf(stderr, "relay: tracing: %s\n", red.Redact(terr.Error()))
	}
	app := newApp(stdout, stderr, getenv, red)
	var notFound error
	app.CommandNotFound = func(c *cli.Context, cmd string) {
		notFound = &usageError{Err: fmt.Errorf("unknown command %q: see relay --help", cmd)}
	}
	clean := &cleanStop{}
	err := app.RunContext(context.WithValue(ctx, cleanStopKey{}, clean), flagsFirst(app, args))
	if err == nil {
		err = notFound
	}
	if err == nil && ctx.Err() != nil && !clean.ok.Load() {
		err = steps.ErrInterrupted
	}
	err = oci.ExplainAccess(err) // relay copy, verify: a registry's 401/403 with what to grant
	tel.End(ctx, err)
	if err != nil {
		code := exitCode(err)
		// Step failures were logged where they happened; say the outcome once, plainly.
		fmt.Fprintf(stderr, "relay: %s\n", red.Redact(err.Error()))
		return code
	}
	return exitOK
}

// cleanStop is set by a command for which being stopped is its normal end (relay
// listener: SIGTERM deletes the session and exits 0), not an interruption.
type cleanStop struct{ ok atomic.Bool }

type cleanStopKey struct{}

func stopIsClean(ctx context.Context) {
	if c, _ := ctx.Value(cleanStopKey{}).(*cleanStop); c != nil {
		c.ok.Store(true)
	}
}

// commandName names the command's span: "relay run".
func commandName(args []string) string {
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		return "relay " + args[1]
	}
	return "relay"
}

func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: "relay.yaml", EnvVars: []string{"RELAY_CONFIG"}, Usage: "relay.yaml to read"},
		&cli.StringFlag{Name: "state", Value: ".relay/state.json", EnvVars: []string{"RELAY_STATE"}, Usage: "state file; the checkout, bundles and SBOMs live beside it"},
		&cli.BoolFlag{Name: "local", EnvVars: []string{"RELAY_LOCAL"}, Usage: "run against embedded stand-ins: sandbox registry, local builder, ephemeral key, --out directory"},
		&cli.BoolFlag{Name: "dry-run", EnvVars: []string{"RELAY_DRY_RUN"}, Usage: "run the steps against the real configuration with every write diverted (registry overlay, ephemeral signer, recorded release) and report each write the real run would make; writes nothing"},
		&cli.StringFlag{Name: "out", Value: "dist", EnvVars: []string{"RELAY_OUT"}, Usage: "directory for release assets with --local or release.target dir"},
		&cli.StringFlag{Name: "log-format", EnvVars: []string{"RELAY_LOG_FORMAT"}, Usage: "json, text or github (default: github inside GitHub Actions, text on a terminal, else json)"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"RELAY_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.IntFlag{Name: "jobs", Value: 4, EnvVars: []string{"RELAY_JOBS"}, Usage: "parallel registry and build operations"},
		&cli.BoolFlag{Name: "replace", EnvVars: []string{"RELAY_REPLACE"}, Usage: "release: swap a published asset whose content changed (default: fail and name both checksums)"},
		&cli.DurationFlag{Name: "timeout", Value: httpx.DefaultTimeout, EnvVars: []string{"RELAY_TIMEOUT"}, Usage: "how long a request may go without progress (no answer, or a body that stopped moving) before it is retried; relay.yaml registries[].timeout overrides it per host"},
		&cli.DurationFlag{Name: "wait-lock", EnvVars: []string{"RELAY_WAIT_LOCK"}, Usage: "wait up to this long (e.g. 10m) for another run holding the same --state; default: fail at once with exit 2"},
	}
}

func newApp(stdout, stderr io.Writer, getenv func(string) string, red *logging.Redactor) *cli.App {
	optsOf := func(c *cli.Context) (Options, error) { return options(c, stdout, stderr, getenv, red) }
	app := &cli.App{
		Name:  "relay",
		Usage: "build, copy by digest, sign, attest, verify and release a container image",
		UsageText: `relay run --local                 # the whole pipeline on embedded stand-ins, in seconds
   relay run                         # the real release described by relay.yaml
   relay run --dry-run --output json # every write the real run would make; makes none
   relay init                        # a commented relay.yaml for this directory
   relay check                       # validate relay.yaml offline (exit 2 with file:line)
   relay plan                        # what each step will do, and what is missing
   relay sign --state .relay/state.json   # one step, e.g. from a workflow step
   relay copy SRC DST --tag v1            # crane copy's job, by digest, with referrers
   relay verify IMAGE --certificate-identity ID --certificate-oidc-issuer URL   # a consumer's check
   relay runner --org acme                # the scale-to-zero runner's ENTRYPOINT (docs/runner.md)
   relay doctor --org acme                # read-only checks of a deployment`,
		Description: `relay reads relay.yaml (docs/config.md), runs the steps checkout, build, copy, sign,
sbom, provenance, verify and release in order, and saves the state after each one, so a
re-run resumes where the last one stopped. Tags are applied last: until release runs,
nothing is reachable by tag. Every flag also reads RELAY_<NAME> (e.g. RELAY_LOCAL=true).

Exit codes: 0 ok, 1 a step failed (relay verify: not verified), 2 usage or config error,
3 missing input, 4 relay verify could not check (registry, network, trust root), 130 interrupted.`,
		Writer:         stdout,
		ErrWriter:      stderr,
		HideVersion:    true,
		ExitErrHandler: func(*cli.Context, error) {}, // exit codes are decided in run, never os.Exit here
		OnUsageError:   func(_ *cli.Context, err error, _ bool) error { return &usageError{Err: err} },
		Commands:       []*cli.Command{runCommand(getenv, optsOf), planCommand(optsOf), checkCommand(getenv, optsOf), initCommand(getenv), versionCommand(stdout)},
		// --version is the convention every installer's smoke test uses (`relay --version`).
		Flags: []cli.Flag{&cli.BoolFlag{Name: "version", Usage: "print relay's version and exit (`relay version` adds its key libraries')"}},
		Action: func(c *cli.Context) error {
			switch {
			case c.Bool("version"):
				fmt.Fprintf(stdout, "relay %s\n", version)
				return nil
			case c.Args().Len() > 0:
				return &usageError{Err: fmt.Errorf("unknown command %q: see relay --help", c.Args().First())}
			}
			return cli.ShowAppHelp(c)
		},
	}
	for _, s := range steps.All() {
		app.Commands = append(app.Commands, stepCommand(s.Name(), getenv, optsOf))
	}
	app.Commands = append(app.Commands, verifyBlobCommand(getenv, optsOf), runnerCommand(getenv, optsOf), listenerCommand(getenv, optsOf), doctorCommand(getenv, optsOf), completionCommand(stdout))
	return app
}

// stepCommand runs one step alone; copy and verify also work on their own, with arguments.
func stepCommand(name string, getenv func(string) string, optsOf func(*cli.Context) (Options, error)) *cli.Command {
	cmd := &cli.Command{
		Name:         name,
		Usage:        stepUsage[name],
		UsageText:    fmt.Sprintf("relay %s [--state .relay/state.json] [--local]", name),
		Description:  "Runs the " + name + " step alone, even if the state marks it done (every step is idempotent), and saves the state.",
		Flags:        append(commonFlags(), outputFlag),
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			o, err := optsOf(c)
			if err != nil {
				return err
			}
			f := flagReader{c: c, getenv: getenv}
			if o.Output = f.str("output"); f.err != nil {
				return f.err
			}
			if c.Args().Len() > 0 {
				return &usageError{Err: fmt.Errorf("relay %s takes no arguments, got %q", name, c.Args().Slice())}
			}
			return runPipeline(c.Context, o, []string{name}, false, true)
		},
	}
	switch name {
	case "copy":
		withCopyArgs(cmd, getenv, optsOf)
	case "verify":
		withVerifyArgs(cmd, getenv, optsOf)
	}
	return cmd
}

// outputFlag is --output of a step run alone: its result as JSON on stdout.
var outputFlag = &cli.StringFlag{Name: "output", Value: "text", EnvVars: []string{"RELAY_OUTPUT"}, Usage: "text, or json: the result on stdout (images, digests, release, the failure)"}

var stepUsage = map[string]string{
	"checkout":   "clone the source at the configured ref and record commit, tag and tree",
	"build":      "build every image without a Docker daemon and push it by digest",
	"copy":       "copy every image by digest (all platforms, with referrers) to each target; no tags",
	"sign":       "sign the index and every platform manifest, by digest",
	"sbom":       "attach SPDX and CycloneDX SBOMs as signed attestations",
	"provenance": "attach signed SLSA v1 provenance",
	"verify":     "read the targets back and verify every signature and attestation",
	"release":    "apply the tags, then publish the release assets",
}

// flagsFirst moves a command's flags ahead of its arguments, so `relay copy SRC DST --tag
// v1` means what it says: urfave/cli stops reading flags at the first argument.
// Global flags before the command (`relay --config ci.yaml run`) are the command's own.
func flagsFirst(app *cli.App, args []string) []string {
	args = commandFirst(app, args)
	if len(args) < 3 {
		return args
	}
	cmd := app.Command(args[1])
	if cmd == nil {
		return args
	}
	takesValue := valueFlags(cmd.Flags)
	var flags, positional []string
	rest := args[2:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			positional = append(positional, rest[i:]...)
			i = len(rest)
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			n := strings.TrimLeft(a, "-")
			if !strings.Contains(n, "=") && takesValue[n] && i+1 < len(rest) {
				i++
				flags = append(flags, rest[i])
			}
		default:
			positional = append(positional, a)
		}
	}
	out := append([]string{args[0], args[1]}, flags...)
	return append(out, positional...)
}

// valueFlags says, for each flag name, whether the flag takes a value.
func valueFlags(flags []cli.Flag) map[string]bool {
	takesValue := map[string]bool{}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	return takesValue
}

// commandFirst moves flags written before the command after it: every command takes the
// common flags, so `relay --local run` is `relay run --local`. relay's own flags (--version,
// --help) and a line with no command stay as they are.
func commandFirst(app *cli.App, args []string) []string {
	if len(args) < 3 || !strings.HasPrefix(args[1], "-") {
		return args
	}
	takesValue := map[string]bool{}
	for _, c := range app.Commands {
		for n, v := range valueFlags(c.Flags) {
			takesValue[n] = takesValue[n] || v
		}
	}
	for i := 1; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			if app.Command(a) == nil {
				return args // an unknown command: the usage error names it
			}
			out := append([]string{args[0], a}, args[1:i]...)
			return append(out, args[i+1:]...)
		}
		n := strings.TrimLeft(a, "-")
		switch {
		case a == "--", n == "version", n == "help", n == "h":
			return args
		case !strings.Contains(n, "=") && takesValue[n]:
			i++ // its value
		}
	}
	return args
}

func usageErr(_ *cli.Context, err error, _ bool) error { return &usageError{Err: err} }

func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// Options is everything a command needs from flags and environment.
type Options struct {
	Config    string
	State     string
	Local     bool
	DryRun    bool
	Out       string
	LogFormat string
	LogLevel  string
	Jobs      int
	Replace   bool
	WaitLock  time.Duration
	Timeout   time.Duration
	Stdout    io.Writer
	Stderr    io.Writer
	Getenv    func(string) string
	Redactor  *logging.Redactor
	Output    string // --dry-run's report: text or json
	// Span is the command's span: its ids go on every log line.
	Span trace.SpanContext
	// Steps are the steps this run executes (empty: all); credentials for signing are
	// wired only when one of them signs or verifies.
	Steps []string
	// Bases are --base IMAGE=REF overrides of images' local.base; Ref is --ref.
	Bases []string
	Ref   string
	// Chain is the command's one HTTP chain, once a command outside a pipeline made it.
	Chain *httpx.Chain
}

// withChain gives o the HTTP chain every API call of a command outside a pipeline (runner,
// doctor) shares, so they share one retry budget per host.
func (o Options) withChain(ctx context.Context, logger *slog.Logger) Options {
	o.Chain = wire.NewChain(ctx, o.wiring(logger, logging.CorrelationID(o.Getenv)), nil, false)
	return o
}

// httpClient is relay's client for the API calls outside a pipeline (runner, doctor):
// each call is also bounded at 30 s in all, as before, so a runner shutting down within
// its platform's grace period still deregisters or gives up in time.
func (o Options) httpClient(ctx context.Context) *http.Client {
	hc := wire.HTTPClient(ctx, o.wiring(nil, logging.CorrelationID(o.Getenv)))
	hc.Timeout = 30 * time.Second
	return hc
}

// retrier is the retry layer of o's chain (nil without one: the client adds its own).
func (o Options) retrier() *httpx.Retrier {
	if o.Chain == nil {
		return nil
	}
	return o.Chain.Retrier()
}

// wiring is what internal/wire needs of the options, with the run's logger and id.
func (o Options) wiring(logger *slog.Logger, cid string) wire.Options {
	return wire.Options{
		Config: o.Config, State: o.State, Local: o.Local, DryRun: o.DryRun, Out: o.Out, Jobs: o.Jobs, Replace: o.Replace,
		Timeout: o.Timeout, Getenv: o.Getenv, Redactor: o.Redactor, Logger: logger, CorrelationID: cid, Version: version, Steps: o.Steps,
		Chain: o.Chain,
	}
}

func options(c *cli.Context, stdout, stderr io.Writer, getenv func(string) string, red *logging.Redactor) (Options, error) {
	f := flagReader{c: c, getenv: getenv}
	o := Options{
		Config: f.str("config"), State: f.str("state"), Local: f.bool("local"), DryRun: f.bool("dry-run"),
		Out: f.str("out"), LogFormat: f.str("log-format"), LogLevel: f.str("log-level"), Jobs: f.int("jobs"), Replace: f.bool("replace"), WaitLock: f.duration("wait-lock"), Timeout: f.duration("timeout"),
		Stdout: red.Writer(stdout), Stderr: stderr, Getenv: getenv, Redactor: red, Span: trace.SpanContextFromContext(c.Context),
	}
	if o.Timeout == 0 && !c.IsSet("timeout") && getenv("RELAY_TIMEOUT") == "" {
		o.Timeout = httpx.DefaultTimeout // a command without the flag (runner, doctor)
	}
	if f.err == nil && (o.Timeout < time.Second || o.Timeout > 6*time.Hour) {
		f.err = &usageError{Err: fmt.Errorf("--timeout %s is not between 1s and 6h: it bounds how long one request may go without progress, e.g. 2m", o.Timeout)}
	}
	return o, f.err
}

// flagReader reads a flag, falling back to RELAY_<NAME> through the injected getenv, so
// tests (and embedders) control the environment without touching the process's.
type flagReader struct {
	c      *cli.Context
	getenv func(string) string
	err    error
}

func envName(flag string) string {
	return "RELAY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func (f *flagReader) env(name string) (string, bool) {
	if f.c.IsSet(name) {
		return "", false
	}
	v := f.getenv(envName(name))
	return v, v != ""
}

func (f *flagReader) str(name string) string {
	if v, ok := f.env(name); ok {
		return v
	}
	return f.c.String(name)
}

func (f *flagReader) bool(name string) bool {
	if v, ok := f.env(name); ok {
		b, err := strconv.ParseBool(v)
		if err != nil && f.err == nil {
			f.err = &usageError{Err: fmt.Errorf("%s=%q is not a boolean: use true or false", envName(name), v)}
		}
		return b
	}
	return f.c.Bool(name)
}

func (f *flagReader) int(name string) int {
	if v, ok := f.env(name); ok {
		n, err := strconv.Atoi(v)
		if err != nil && f.err == nil {
			f.err = &usageError{Err: fmt.Errorf("%s=%q is not a whole number", envName(name), v)}
		}
		return n
	}
	return f.c.Int(name)
}

func (f *flagReader) duration(name string) time.Duration {
	if v, ok := f.env(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil && f.err == nil {
			f.err = &usageError{Err: fmt.Errorf("%s=%q is not a duration: use e.g. 90s, 5m or 6h", envName(name), v)}
		}
		return d
	}
	return f.c.Duration(name)
}

func (f *flagReader) list(name string) []string {
	if v, ok := f.env(name); ok {
		return splitList([]string{v})
	}
	return splitList(f.c.StringSlice(name))
}

func newLogger(o Options) (*slog.Logger, string, error) {
	format := o.LogFormat
	switch {
	case format != "":
	case o.Getenv != nil && o.Getenv("GITHUB_ACTIONS") == "true":
		format = "github" // groups per step, annotations for warnings and errors in the job's log
	default:
		format = "json"
		if f, ok := o.Stderr.(*os.File); ok && isTerminal(f) {
			format = "text"
		}
	}
	lvl, err := logging.ParseLevel(o.LogLevel)
	if err != nil {
		return nil, "", &usageError{Err: err}
	}
	cid := logging.CorrelationID(o.Getenv)
	l, err := logging.New(o.Stderr, logging.Options{
		Format: format, Level: lvl, CorrelationID: cid, RunnerName: logging.RunnerName(o.Getenv), Redactor: o.Redactor,
	})
	if err != nil {
		return nil, "", &usageError{Err: err}
	}
	if o.Span.IsValid() {
		l = l.With("trace_id", o.Span.TraceID().String(), "span_id", o.Span.SpanID().String())
	}
	return l, cid, nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
