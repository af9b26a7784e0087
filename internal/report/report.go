// Package report says what one relay invocation did: the JSON of `relay run --output
// json`, a GitHub Actions step's outputs, and its step summary — one card for a whole run
// or a release, one compact row for any other single step, and what failed and how to
// resume when it did.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/steps"
)

// Result is one invocation's outcome.
type Result struct {
	OK         bool     `json:"ok"`
	Mode       string   `json:"mode"`
	Command    string   `json:"command"` // e.g. "relay run", "relay build"
	Invocation string   `json:"invocation,omitempty"`
	Ran        []string `json:"ran"`       // steps this invocation ran
	Completed  []Step   `json:"completed"` // every step the state holds as done
	Source     *Source  `json:"source,omitempty"`
	Images     []Image  `json:"images,omitempty"`
	Builds     []Image  `json:"builds,omitempty"` // as the builder pushed them
	Signatures int      `json:"signatures"`
	SBOMs      int      `json:"sboms"`
	Provenance int      `json:"provenance"`
	Verified   int      `json:"verified_checks"`
	Release    *Release `json:"release,omitempty"`
	Verify     []string `json:"verify_commands,omitempty"` // what a consumer runs
	Failure    *Failure `json:"failure,omitempty"`
	State      string   `json:"state"`
}

// Step is a completed step and how long it took.
type Step struct {
	Name       string `json:"name"`
	DurationMS int64  `json:"duration_ms"`
}

// Source is what was released.
type Source struct {
	URL     string `json:"url,omitempty"`
	Ref     string `json:"ref"`
	Tag     string `json:"tag,omitempty"`
	Commit  string `json:"commit"`
	Version string `json:"version"` // the tag, else the short commit
}

// Image is one image by digest: where it was copied (or built, before copy), and its tags.
type Image struct {
	Name      string     `json:"name"`
	Reference string     `json:"reference"` // the first target's repository@digest
	Digest    string     `json:"digest"`
	Targets   []string   `json:"targets,omitempty"` // every target's repository@digest
	Platforms []Platform `json:"platforms"`
	Tags      []string   `json:"tags,omitempty"` // repository:tag, as applied
}

// Platform is one platform's manifest.
type Platform struct {
	Platform string `json:"platform"`
	Digest   string `json:"digest"`
}

// Release is what the release step published.
type Release struct {
	Target  string `json:"target"`
	URL     string `json:"url"`
	Assets  int    `json:"assets"`
	PinFile string `json:"pin_file,omitempty"` // images.lock.json on this machine
}

// Failure is why the invocation stopped, and how to go on.
type Failure struct {
	Step   string `json:"step,omitempty"` // empty: before any step
	Error  string `json:"error"`
	Resume string `json:"resume"`
}

// Options are what the state does not hold.
type Options struct {
	Command   string   // "relay run", "relay build"
	Mode      string   // release, local, dry-run
	Ran       []string // steps run by this invocation
	Err       error    // the invocation's error, if it failed
	StatePath string
	StateDir  string              // where the state's bundles live
	Getenv    func(string) string // GitHub Actions' variables, for the verify commands
	Redact    func(string) string // applied to every error text
}

// New describes st after an invocation with o; st may be nil when it failed before any step.
func New(st *steps.State, o Options) *Result {
	if o.Redact == nil {
		o.Redact = func(s string) string { return s }
	}
	if o.Getenv == nil {
		o.Getenv = func(string) string { return "" }
	}
	r := &Result{OK: o.Err == nil, Mode: o.Mode, Command: o.Command, Ran: append([]string{}, o.Ran...), Completed: []Step{}, State: o.StatePath}
	if o.Err != nil {
		r.Failure = failure(o)
	}
	if st == nil {
		return r
	}
	r.Invocation = st.Invocation()
	for _, c := range st.Completed {
		r.Completed = append(r.Completed, Step{Name: c.Name, DurationMS: c.DurationMS})
	}
	if s := st.Source; s != nil {
		r.Source = &Source{URL: s.Repo, Ref: s.Ref, Tag: s.Tag, Commit: s.Commit, Version: s.Tag}
		if r.Source.Version == "" && len(s.Commit) >= 12 {
			r.Source.Version = s.Commit[:12]
		}
	}
	r.Images, r.Builds = images(st), built(st)
	r.Signatures, r.SBOMs, r.Provenance = len(st.Signatures), len(st.SBOMs), len(st.Provenance)
	if st.Verification != nil {
		r.Verified = st.Verification.Checked
	}
	if rel := st.Release; rel != nil {
		r.Release = &Release{Target: rel.Target, URL: rel.URL, Assets: len(rel.Assets)}
		if rel.PinFile != "" {
			r.Release.PinFile = filepath.Join(o.StateDir, rel.PinFile)
		}
	}
	r.Verify = verifyCommands(st, r.Images, o)
	return r
}

func images(st *steps.State) []Image {
	var out []Image
	at := map[string]int{}
	for _, c := range st.Copies {
		i, ok := at[c.Name]
		if !ok {
			i = len(out)
			at[c.Name] = i
			im := Image{Name: c.Name, Reference: c.Ref(), Digest: c.Digest}
			for _, p := range c.Platforms {
				im.Platforms = append(im.Platforms, Platform{Platform: p.Platform, Digest: p.Digest})
			}
			out = append(out, im)
		}
		out[i].Targets = append(out[i].Targets, c.Ref())
	}
	if len(out) == 0 { // built, not copied yet: the build registry's reference
		out = built(st)
	}
	if st.Release != nil {
		for i := range out {
			for _, t := range st.Release.Tags {
				for _, ref := range out[i].Targets {
					if repo, _, _ := strings.Cut(ref, "@"); strings.HasPrefix(t, repo+":") {
						out[i].Tags = append(out[i].Tags, t)
					}
				}
			}
		}
	}
	return out
}

func built(st *steps.State) []Image {
	var out []Image
	for _, b := range st.Builds {
		im := Image{Name: b.Name, Reference: b.Ref, Digest: b.Digest}
		for _, p := range b.Platforms {
			im.Platforms = append(im.Platforms, Platform{Platform: p.Platform, Digest: p.Digest})
		}
		out = append(out, im)
	}
	return out
}

// githubIssuer is the OIDC issuer of GitHub Actions' identity tokens.
const githubIssuer = "https://token.actions.githubusercontent.com"

// verifyCommands are what a consumer runs for the first image: relay's own check, cosign's,
// and GitHub's when the attestations were uploaded there. The signer is read from the
// signature bundle, so the commands name exactly the identity that signed.
func verifyCommands(st *steps.State, ims []Image, o Options) []string {
	if len(ims) == 0 || len(st.Signatures) == 0 || len(st.Copies) == 0 {
		return nil
	}
	ref := ims[0].Reference
	sg, err := attest.ReadBundleSigner(filepath.Join(o.StateDir, st.Signatures[0].Bundle))
	if err != nil {
		return nil
	}
	var how, cosignHow string
	switch {
	case sg.Keyed:
		how = "--key relay-signing.pub"
		cosignHow = how
		if !sg.TLog {
			cosignHow += " --insecure-ignore-tlog=true" // signed without a transparency log
		}
	case sg.Identity != "":
		how = "--certificate-identity " + sg.Identity + " --certificate-oidc-issuer " + sg.Issuer
		cosignHow = how
	default:
		return nil
	}
	cmds := []string{"relay verify " + ref + " " + how, "cosign verify " + cosignHow + " " + ref}
	// gh attestation verify reads GitHub's attestations API, which the release filled.
	if st.Release != nil && len(st.Release.Attestations) > 0 && sg.Issuer == githubIssuer {
		if repo := o.Getenv("GITHUB_REPOSITORY"); repo != "" {
			cmds = append(cmds, "gh attestation verify oci://"+ref+" --repo "+repo)
		}
	}
	return cmds
}

func failure(o Options) *Failure {
	f := &Failure{Error: o.Redact(o.Err.Error())}
	var se *steps.StepError
	if errors.As(o.Err, &se) {
		f.Step = se.Step
		f.Error = o.Redact(se.Err.Error())
	}
	var mi *steps.MissingInputError
	if errors.As(o.Err, &mi) {
		f.Step = mi.Step
	}
	done := strings.Join(o.Ran, ", ")
	switch {
	case errors.Is(o.Err, steps.ErrInterrupted):
		f.Resume = "interrupted: run the same command again with the same --state (" + o.StatePath + "); it resumes where this stopped"
	case f.Step == "":
		f.Resume = "nothing ran: fix what the error names and run it again"
	case done != "":
		f.Resume = "run the same command again with the same --state (" + o.StatePath + "): " + done + " completed and will not run again"
	default:
		f.Resume = "run the same command again with the same --state (" + o.StatePath + ") once the error is fixed"
	}
	if o.Getenv("GITHUB_ACTIONS") == "true" {
		f.Resume += "; in Actions, re-run the failed job with the state restored (actions/cache, docs/github-actions.md)"
	}
	return f
}

// JSON is the result as `relay run --output json` prints it.
func (r *Result) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	return append(b, '\n'), err
}

// Outputs are the GitHub Actions step outputs, as GITHUB_OUTPUT lines.
func (r *Result) Outputs() string {
	var b strings.Builder
	for _, im := range r.Images {
		fmt.Fprintf(&b, "%s-digest=%s\n%s-ref=%s\n", im.Name, im.Digest, im.Name, im.Reference)
	}
	if len(r.Images) > 0 {
		type out struct {
			Name      string   `json:"name"`
			Reference string   `json:"reference"`
			Digest    string   `json:"digest"`
			Platforms []string `json:"platforms"`
			Tags      []string `json:"tags"`
		}
		var all []out
		for _, im := range r.Images {
			o := out{Name: im.Name, Reference: im.Reference, Digest: im.Digest, Platforms: []string{}, Tags: append([]string{}, im.Tags...)}
			for _, p := range im.Platforms {
				o.Platforms = append(o.Platforms, p.Platform)
			}
			all = append(all, o)
		}
		j, _ := json.Marshal(all)
		fmt.Fprintf(&b, "image=%s\ndigest=%s\nimages=%s\n", r.Images[0].Reference, r.Images[0].Digest, j)
	}
	if r.Release != nil {
		fmt.Fprintf(&b, "release-url=%s\n", r.Release.URL)
		if r.Release.PinFile != "" {
			fmt.Fprintf(&b, "pin-file=%s\n", r.Release.PinFile)
		}
	}
	done := []string{}
	for _, c := range r.Completed {
		done = append(done, c.Name)
	}
	j, _ := json.Marshal(done)
	fmt.Fprintf(&b, "completed-steps=%s\n", j)
	return b.String()
}

// Markdown is the step summary: the card when this invocation released (or ran the whole
// pipeline), else one row per step it ran; what failed and how to resume when it failed.
func (r *Result) Markdown() string {
	var b strings.Builder
	// A re-run of a finished release (a re-run job with its state restored) shows it again.
	again := len(r.Ran) == 0 && r.Failure == nil && r.Command == "relay run"
	switch {
	case r.Release != nil && (slices.Contains(r.Ran, "release") || again):
		r.card(&b)
	case len(r.Ran) > 0:
		for _, s := range r.Ran {
			fmt.Fprintf(&b, "- **relay %s** done%s%s\n", s, r.detail(s), r.took(s))
		}
	}
	if f := r.Failure; f != nil {
		what := "relay failed before any step"
		if f.Step != "" {
			what = "relay " + f.Step + " failed"
		}
		fmt.Fprintf(&b, "\n> [!CAUTION]\n> **%s:** %s\n>\n> %s\n", what, mdLine(f.Error), mdLine(f.Resume))
	}
	if b.Len() == 0 {
		return ""
	}
	return b.String() + "\n"
}

func (r *Result) card(b *strings.Builder) {
	title := "relay released"
	if r.Mode == "local" {
		title = "relay --local released"
	}
	if s := r.Source; s != nil {
		title += " " + s.Version
		if s.Tag != "" && len(s.Commit) >= 12 {
			title += " (`" + s.Commit[:12] + "`)"
		}
	}
	fmt.Fprintf(b, "### %s\n\n", title)
	if len(r.Images) > 0 {
		b.WriteString("| image | reference | platforms | tags |\n|---|---|---|---|\n")
		for _, im := range r.Images {
			var plats, tags []string
			for _, p := range im.Platforms {
				plats = append(plats, p.Platform)
			}
			for _, t := range im.Tags {
				tags = append(tags, t[strings.LastIndex(t, ":")+1:])
			}
			fmt.Fprintf(b, "| %s | `%s` | %s | %s |\n", im.Name, im.Reference, strings.Join(plats, ", "), strings.Join(uniq(tags), ", "))
		}
		b.WriteString("\n")
		if n := len(r.Images[0].Targets); n > 1 {
			fmt.Fprintf(b, "Each image is in %d targets, by the same digest.\n\n", n)
		}
	}
	fmt.Fprintf(b, "**Signed:** %d signatures, %d SBOMs, %d provenance", r.Signatures, r.SBOMs, r.Provenance)
	if r.Verified > 0 {
		fmt.Fprintf(b, " · **verified:** %d checks, read back from every target", r.Verified)
	}
	b.WriteString("  \n")
	if rel := r.Release; rel != nil {
		fmt.Fprintf(b, "**Release:** %s (%d files", rel.URL, rel.Assets)
		if rel.PinFile != "" {
			b.WriteString(", pins in `images.lock.json`")
		}
		b.WriteString(")  \n")
	}
	if r.Invocation != "" {
		fmt.Fprintf(b, "**Invocation:** `%s` (the provenance and release.json name it)\n", r.Invocation)
	}
	if r.Mode == "local" {
		b.WriteString("\n--local: the registry is a sandbox under the state directory and the key is ephemeral; nothing left this machine.\n")
	}
	if len(r.Verify) > 0 {
		b.WriteString("\n<details><summary>Verify it</summary>\n\n```sh\n")
		for _, c := range r.Verify {
			b.WriteString(c + "\n")
		}
		b.WriteString("```\n</details>\n")
	}
	if len(r.Completed) > 0 {
		b.WriteString("\n<details><summary>Steps</summary>\n\n| step | duration |\n|---|---|\n")
		for _, c := range r.Completed {
			fmt.Fprintf(b, "| %s | %d ms |\n", c.Name, c.DurationMS)
		}
		b.WriteString("\n</details>\n")
	}
}

// detail is what a single step left, in a few words.
func (r *Result) detail(step string) string {
	switch step {
	case "checkout":
		if s := r.Source; s != nil {
			return fmt.Sprintf(": %s at `%s`", s.Version, short(s.Commit))
		}
	case "build", "copy":
		ims := r.Images
		if step == "build" {
			ims = r.Builds
		}
		var refs []string
		for _, im := range ims {
			refs = append(refs, fmt.Sprintf("%s `%s` (%d platforms)", im.Name, im.Reference, len(im.Platforms)))
		}
		if len(refs) > 0 {
			return ": " + strings.Join(refs, ", ")
		}
	case "sign":
		return fmt.Sprintf(": %d signatures", r.Signatures)
	case "sbom":
		return fmt.Sprintf(": %d SBOMs attached as signed attestations", r.SBOMs)
	case "provenance":
		return fmt.Sprintf(": %d SLSA provenance", r.Provenance)
	case "verify":
		return fmt.Sprintf(": %d checks, read back from every target", r.Verified)
	}
	return ""
}

func (r *Result) took(step string) string {
	for _, c := range r.Completed {
		if c.Name == step {
			return fmt.Sprintf(" · %d ms", c.DurationMS)
		}
	}
	return ""
}

// mdLine keeps a text on one Markdown quote line.
func mdLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ") }

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// uniq keeps the first of each tag, in the order they were applied.
func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
