package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/source"
	"github.com/relaydev/relay/pkg/steps"
)

// dryRun runs the selected steps on the dry implementations (registry overlay, stand-in
// signer, recording publisher) after the read-only checks, and reports every write the
// real run would make. It continues after the build of a real state for the same inputs
// (a cloud build is never started), else starts from scratch; it never writes --state.
func dryRun(ctx context.Context, o Options, selected []steps.Step) error {
	if o.Output != "" && o.Output != "text" && o.Output != "json" {
		return &usageError{Err: fmt.Errorf("--output %q: use text or json", o.Output)}
	}
	in, err := load(o, nil)
	if err != nil {
		return err
	}
	logger, cid, cfg := in.logger, in.cid, in.cfg
	st := dryRunState(o, in)
	for _, s := range selected {
		o.Steps = append(o.Steps, s.Name())
	}
	w, err := wire.Build(ctx, o.wiring(logger, cid), cfg)
	if err != nil {
		return err
	}
	defer w.Close()
	text := o.Stdout
	if o.Output == "json" {
		text = io.Discard
	}
	fmt.Fprintf(text, "relay plan for %s (%s)\n", o.Config, modeName(o))
	printPlan(text, w.Env, st)

	checks := append(append(steps.Preflight(ctx, w.Env), steps.PushChecks(ctx, w.Env)...), w.DryRun.Checks...)
	fmt.Fprintf(text, "\nchecks (read-only):\n")
	failed := printFindings(text, checks)
	var runErr error
	if failed == 0 && ctx.Err() == nil {
		x := &steps.Executor{Env: w.Env, StatePath: w.DryRun.StatePath}
		runErr = x.Run(ctx, selected, st)
	}
	rep := w.DryRun.Report(checks, st, w.Env.StateDir, runErr)
	if o.Output == "json" {
		enc := json.NewEncoder(o.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if failed == 0 {
		printDryRunReport(text, rep)
	}
	switch {
	case ctx.Err() != nil:
		return steps.ErrInterrupted
	case failed > 0:
		return fmt.Errorf("dry run: %d check(s) failed; nothing was written", failed)
	case runErr != nil:
		return fmt.Errorf("dry run: the real run would fail; nothing was written: %w", runErr)
	}
	fmt.Fprintln(text, "dry run: every check passed; nothing was written")
	return nil
}

// dryRunState continues after a real state's build for the same inputs, else starts anew.
func dryRunState(o Options, in *loaded) *steps.State {
	inputs := steps.Inputs{ConfigDigest: in.cfg.Digest, Repo: source.RedactURL(in.cfg.Source.Repo), Ref: in.cfg.Source.Ref}
	if st, ok := steps.DryRunFrom(in.st, inputs, in.cid, nowUTC()); ok {
		in.logger.Info("dry run: continuing after the checkout and build of the real run's state, as the real run would; the state file is not written", "state", o.State, "commit", st.Source.Commit)
		return st
	}
	if in.st != nil {
		in.logger.Info("dry run: starting from scratch (the state has no build for these inputs); the state file is not written", "state", o.State)
	}
	return steps.NewState(steps.ModeDryRun, inputs, in.cid, nowUTC())
}

// printRepositoryPlans says per repository what would be written.
func printRepositoryPlans(out io.Writer, plans []wire.RepositoryPlan) {
	for _, p := range plans {
		n := map[string]int{}
		var tags []string
		var mounted int64
		for _, w := range p.Writes {
			n[w.Kind]++
			if w.Kind == oci.WriteTag && !slices.Contains(tags, w.Tag) {
				tags = append(tags, w.Tag)
			}
			if w.Kind == oci.WriteMount {
				mounted += w.Size
			}
		}
		sort.Strings(tags)
		fmt.Fprintf(out, "  %s: %d blobs (%d bytes), %d mounted (%d bytes), %d already there, %d manifests, %d referrers, %d tag writes to %v\n",
			p.Repository, n[oci.WriteBlob], p.Bytes, n[oci.WriteMount], mounted, len(p.Skipped), n[oci.WriteManifest], n[oci.WriteReferrer], n[oci.WriteTag], tags)
	}
}

func printFindings(out io.Writer, fs []steps.Finding) int {
	failed := 0
	for _, f := range fs {
		mark := "ok  "
		if !f.OK {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(out, "  %s %s: %s\n", mark, f.Check, f.Note)
	}
	return failed
}

// printDryRunReport says per destination what the real run would write.
func printDryRunReport(out io.Writer, r *wire.Report) {
	fmt.Fprintf(out, "\nsteps run on the dry implementations: %s\n", strings.Join(r.Steps, ", "))
	fmt.Fprintf(out, "\nwrites the real run would make (none was made):\n")
	printRepositoryPlans(out, r.Registries)
	if p := r.Release; p != nil {
		act := map[string]int{}
		var bytes int64
		for _, a := range p.Assets {
			act[a.Action]++
			if a.Action != "unchanged" {
				bytes += a.Size
			}
		}
		fmt.Fprintf(out, "  release (%s %s, %s): %d assets to upload, %d to replace (%d bytes), %d unchanged\n", p.Target, p.Where, p.Release, act["upload"], act["replace"], bytes, act["unchanged"])
		for _, note := range p.Notes {
			fmt.Fprintf(out, "    note: %s\n", note)
		}
	}
	if len(r.GitHubAtts) > 0 {
		fmt.Fprintf(out, "  GitHub attestations API: %d bundles\n", len(r.GitHubAtts))
	}
	if len(r.Limits) > 0 {
		fmt.Fprintf(out, "\nlimits:\n")
		printFindings(out, r.Limits)
	}
}
