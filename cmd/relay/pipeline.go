package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/relaydev/relay/internal/report"
	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/source"
	"github.com/relaydev/relay/pkg/steps"
)

func runPipeline(ctx context.Context, o Options, only []string, restart, force bool) error {
	if o.Jobs < 1 {
		return &usageError{Err: fmt.Errorf("--jobs must be at least 1, got %d", o.Jobs)}
	}
	selected, err := steps.Select(only)
	if err != nil {
		return &usageError{Err: err}
	}
	if o.DryRun {
		return dryRun(ctx, o, selected)
	}
	if o.Output != "" && o.Output != "text" && o.Output != "json" {
		return &usageError{Err: fmt.Errorf("--output %q: use text or json", o.Output)}
	}
	var rec runRecord
	err = pipeline(ctx, o, selected, restart, force, &rec)
	rec.report(o, commandLine(only, force), err, len(only) == 0 || slices.Contains(only, "release"))
	return err
}

// runRecord is what a pipeline run leaves for its report, however far it got.
type runRecord struct {
	logger *slog.Logger
	st     *steps.State
	ran    []string
}

func pipeline(ctx context.Context, o Options, selected []steps.Step, restart, force bool, rec *runRecord) error {
	if o.WaitLock < 0 {
		return &usageError{Err: fmt.Errorf("--wait-lock must not be negative, got %s", o.WaitLock)}
	}
	var only []string
	for _, s := range selected {
		only = append(only, s.Name())
	}
	var lock *steps.StateLock
	in, err := load(o, func() error {
		// One writer per state, for the whole run: taken after the config proved valid and
		// before the state is read, so two runs never both resume from it.
		var err error
		lock, err = steps.LockState(ctx, o.State, steps.LockOptions{Wait: o.WaitLock, Command: commandLine(only, force)})
		return err
	})
	defer lock.Unlock()
	if err != nil {
		return err
	}
	logger, cid, cfg := in.logger, in.cid, in.cfg
	rec.logger = logger
	st, err := resumeOrStart(o, in, restart)
	if err != nil {
		return err
	}
	rec.st = st
	// A resumed run logs the id of the run it continues, so their logs can be joined.
	if st.CorrelationID != "" && st.CorrelationID != cid {
		logger = logger.With("resumed_correlation_id", st.CorrelationID)
	}

	o.Steps = only
	w, err := wire.Build(ctx, o.wiring(logger, cid), cfg)
	if err != nil {
		return err
	}
	defer w.Close()
	if restart && o.Local {
		logger.Info("restart: the state starts over; the sandbox registry keeps what it holds")
	}
	x := &steps.Executor{Env: w.Env, StatePath: o.State, Force: force}
	err = x.Run(ctx, selected, st)
	rec.ran = x.Ran
	return err
}

// report tells what the run did: JSON on stdout with --output json, else the text summary
// when it released; inside GitHub Actions also the step's outputs and summary, failed or not.
func (rec *runRecord) report(o Options, command string, err error, releasing bool) {
	mode := steps.ModeRelease
	if o.Local {
		mode = steps.ModeLocal
	}
	stateDir, _ := filepath.Abs(filepath.Dir(o.State))
	r := report.New(rec.st, report.Options{Command: command, Mode: string(mode), Ran: rec.ran, Err: err, StatePath: o.State, StateDir: stateDir,
		Getenv: o.Getenv, Redact: o.Redactor.Redact})
	warn := func(what string, werr error) {
		if werr != nil && rec.logger != nil {
			rec.logger.Warn(what+" failed", "error", werr)
		}
	}
	if p := o.Getenv("GITHUB_OUTPUT"); p != "" {
		warn("writing GitHub Actions outputs", appendFile(p, r.Outputs()))
	}
	if p := o.Getenv("GITHUB_STEP_SUMMARY"); p != "" {
		if md := r.Markdown(); md != "" {
			warn("writing the GitHub Actions step summary", appendFile(p, o.Redactor.Redact(md)))
		}
	}
	switch {
	case o.Output == "json":
		j, jerr := r.JSON()
		if jerr == nil {
			_, jerr = o.Stdout.Write(j)
		}
		warn("printing the result", jerr)
	case err == nil && releasing && rec.st != nil:
		printSummary(o.Stdout, mode, stateDir, rec.st, o.State)
	}
}

// commandLine names the run in the lock, for whoever finds the state held.
func commandLine(only []string, force bool) string {
	switch {
	case force:
		return "relay " + strings.Join(only, ",")
	case len(only) > 0:
		return "relay run --only " + strings.Join(only, ",")
	}
	return "relay run"
}

// resumeOrStart is the state the run continues: the saved one when it was made by this
// kind of run for the same inputs, else a new one. A state of another kind is refused.
func resumeOrStart(o Options, in *loaded, restart bool) (*steps.State, error) {
	st, cfg := in.st, in.cfg
	mode := steps.ModeRelease
	if o.Local {
		mode = steps.ModeLocal
	}
	// The state is cached by CI to resume: it records the repository without its credential.
	inputs := steps.Inputs{ConfigDigest: cfg.Digest, Repo: source.RedactURL(cfg.Source.Repo), Ref: cfg.Source.Ref}
	if st != nil && !restart {
		if st.Mode != mode {
			how := map[steps.Mode]string{steps.ModeLocal: "relay run --local", steps.ModeDryRun: "relay run --dry-run", steps.ModeRelease: "a real run"}
			return nil, &steps.StateError{Path: o.State, Msg: fmt.Sprintf("made by %s; this is %s, which never trusts it", how[st.Mode], how[mode]),
				Fix: "pass --restart to start over, or another --state"}
		}
		if st.Inputs != inputs {
			in.logger.Warn("state was made for other inputs: starting over", "state", o.State, "ref", st.Inputs.Ref, "config_digest", st.Inputs.ConfigDigest)
			st = nil
		} else if len(st.Completed) > 0 {
			in.logger.Info("resuming from state", "state", o.State, "completed", len(st.Completed))
		}
	}
	if st == nil || restart {
		st = steps.NewState(mode, inputs, in.cid, nowUTC())
	}
	return st, nil
}

// loaded is what every pipeline command starts from.
type loaded struct {
	logger *slog.Logger
	cid    string
	cfg    *config.Config
	st     *steps.State // nil when there is no state file yet
}

// load reads the config, then calls beforeState (when not nil), then reads the state.
func load(o Options, beforeState func() error) (*loaded, error) {
	logger, cid, err := newLogger(o)
	if err != nil {
		return nil, err
	}
	cfg, err := loadConfig(o, logger)
	if err != nil {
		return nil, err
	}
	if beforeState != nil {
		if err := beforeState(); err != nil {
			return nil, err
		}
	}
	st, err := steps.LoadState(o.State)
	if err != nil {
		return nil, err
	}
	return &loaded{logger: logger, cid: cid, cfg: cfg, st: st}, nil
}

// loadConfig reads relay.yaml as this run sees it: what it leaves out of the source taken
// from GitHub Actions, --ref and --base applied.
func loadConfig(o Options, logger *slog.Logger) (*config.Config, error) {
	fb := wire.ActionsFallback(o.Getenv)
	if o.Ref != "" {
		fb.Ref = o.Ref // --ref also stands in for a missing source.ref outside Actions
	}
	cfg, err := config.LoadWith(o.Config, fb)
	if err != nil {
		return nil, err
	}
	if cfg.FilledFrom != "" {
		logger.Info("source settings relay.yaml leaves out taken from "+cfg.FilledFrom, "repo", cfg.Source.Repo, "ref", cfg.Source.Ref, "url", cfg.Source.URL)
	}
	if o.Ref != "" {
		if err := cfg.OverrideRef(o.Ref); err != nil {
			return nil, &usageError{Err: err}
		}
		logger.Info("ref overridden", "ref", cfg.Source.Ref)
	}
	for _, b := range o.Bases {
		image, ref, ok := strings.Cut(b, "=")
		if !ok {
			return nil, &usageError{Err: fmt.Errorf("--base %q is not IMAGE=REF", b)}
		}
		if err := cfg.OverrideBase(image, ref); err != nil {
			return nil, &usageError{Err: err}
		}
		logger.Info("base overridden", "image", image, "base", ref)
	}
	return cfg, nil
}

func planCmd(ctx context.Context, o Options) error {
	in, err := load(o, nil)
	if err != nil {
		return err
	}
	logger, cid, cfg, st := in.logger, in.cid, in.cfg, in.st
	want := steps.ModeRelease
	if o.Local {
		want = steps.ModeLocal
	}
	if st != nil && st.Mode != want && !(o.DryRun && st.Mode == steps.ModeRelease) {
		fmt.Fprintf(o.Stdout, "(state %s was made by a %s run; planning from the start)\n", o.State, st.Mode)
		st = nil
	}
	if st == nil {
		st = steps.NewState(steps.ModeDryRun, steps.Inputs{}, cid, nowUTC())
	}
	po := o
	if !o.Local {
		po.DryRun = true
	}
	// The plan and its read-only checks need no overlay, stand-in signer or token.
	wo := po.wiring(logger, cid)
	wo.Inspect = !o.Local
	w, err := wire.Build(ctx, wo, cfg)
	if err != nil {
		return err
	}
	defer w.Close()
	fmt.Fprintf(o.Stdout, "relay plan for %s (%s)\n", o.Config, modeName(o))
	printPlan(o.Stdout, w.Env, st)
	if !o.DryRun {
		return nil
	}
	fmt.Fprintf(o.Stdout, "\nchecks (read-only):\n")
	failed := printFindings(o.Stdout, append(steps.Preflight(ctx, w.Env), wire.CredentialChecks(ctx, wo, w.Env.Config)...))
	if ctx.Err() != nil {
		return steps.ErrInterrupted
	}
	if failed > 0 {
		return fmt.Errorf("dry run: %d check(s) failed; nothing was written", failed)
	}
	fmt.Fprintln(o.Stdout, "dry run: every check passed; nothing was written")
	return nil
}

// printPlan prints each step's plan, and the inputs missing that no earlier step makes.
func printPlan(out io.Writer, env *steps.Env, st *steps.State) {
	missingTotal := 0
	for i, s := range steps.All() {
		p := s.Plan(env, st)
		status := ""
		if p.Done {
			status = " [done]"
		}
		fmt.Fprintf(out, "%d. %s%s\n", i+1, p.Step, status)
		for _, d := range p.Does {
			fmt.Fprintf(out, "   - %s\n", d)
		}
		// A missing input that an earlier step of this plan produces is expected, not missing.
		if i == 0 || st.Done(steps.All()[i-1].Name()) {
			for _, m := range p.Missing {
				fmt.Fprintf(out, "   ! missing: %s\n", m)
				missingTotal++
			}
		}
		for _, m := range p.Absent {
			fmt.Fprintf(out, "   ! missing: %s\n", m)
			missingTotal++
		}
	}
	if missingTotal > 0 {
		fmt.Fprintf(out, "%d input(s) missing\n", missingTotal)
	}
}

func modeName(o Options) string {
	switch {
	case o.Local:
		return "--local: sandbox registry, local builder, ephemeral key, release into " + o.Out
	case o.DryRun:
		return "--dry-run: no writes"
	default:
		return "real run; nothing is written by plan"
	}
}

func printSummary(w io.Writer, mode steps.Mode, stateDir string, st *steps.State, statePath string) {
	if st.Release == nil {
		return
	}
	fmt.Fprintf(w, "\nrelay: released %s (%s)\n", st.Source.Tag, shortCommit(st.Source.Commit))
	for _, c := range st.Copies {
		var plats []string
		for _, p := range c.Platforms {
			plats = append(plats, p.Platform)
		}
		fmt.Fprintf(w, "  %s  %s\n    platforms: %s\n", c.Name, c.Ref(), strings.Join(plats, ", "))
	}
	if len(st.Release.Tags) > 0 {
		fmt.Fprintf(w, "  tags: %s\n", strings.Join(st.Release.Tags, ", "))
	}
	fmt.Fprintf(w, "  signatures: %d, SBOMs: %d, provenance: %d", len(st.Signatures), len(st.SBOMs), len(st.Provenance))
	if st.Verification != nil {
		fmt.Fprintf(w, ", verified checks: %d", st.Verification.Checked)
	}
	fmt.Fprintf(w, "\n  release: %s (%d files)\n  invocation: %s (release.json and the provenance name it)\n  state: %s\n", st.Release.URL, len(st.Release.Assets), st.Invocation(), statePath)
	if mode == steps.ModeLocal {
		fmt.Fprintf(w, "  (--local: the registry is a sandbox under %s, signed with an ephemeral key: relay-signing.pub)\n", filepath.Join(stateDir, "local"))
	}
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

func appendFile(p, s string) error {
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
