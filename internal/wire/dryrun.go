package wire

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/release"
	"github.com/relaydev/relay/pkg/sbom"
	"github.com/relaydev/relay/pkg/steps"
)

// DryRun is what --dry-run puts in place of the writers, and what they saw: the registry
// overlay, the recording publisher, and the checks of the signer's real prerequisites.
type DryRun struct {
	Overlay   *oci.Overlay
	Publisher *release.Recorder
	// Checks are the signer's and publisher's read-only checks, made while wiring.
	Checks []steps.Finding
	// StatePath is where the dry run keeps its state: never the real run's.
	StatePath string
	dir       string
}

// newDryRun makes the scratch directory the dry run keeps blobs, state and checkout in.
func newDryRun() (*DryRun, error) {
	dir, err := os.MkdirTemp("", "relay-dry-run-")
	if err != nil {
		return nil, fmt.Errorf("dry run: scratch directory: %w", err)
	}
	return &DryRun{dir: dir, StatePath: filepath.Join(dir, "state", "state.json")}, nil
}

func (d *DryRun) close() { os.RemoveAll(d.dir) }

// overlay puts the registry overlay above next (the write guard), keeping its blobs in
// the scratch directory.
func (d *DryRun) overlay(next http.RoundTripper) (http.RoundTripper, error) {
	ov, err := oci.NewOverlay(next, filepath.Join(d.dir, "overlay"))
	d.Overlay = ov
	return ov, err
}

func (d *DryRun) check(name string, err error, note string) {
	f := steps.Finding{Check: name, OK: err == nil, Note: note}
	if err != nil {
		f.Note = err.Error()
	}
	d.Checks = append(d.Checks, f)
}

// copyDir copies the regular files of src (none when it does not exist) into dst.
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// standIn is the dry run's signer: an ephemeral key that signs what the real signer would,
// so attach and verify run; nobody can verify it later, and it never leaves the overlay.
type standIn struct {
	*attest.KeySigner
	real string
}

func (s standIn) Identity() string { return "an ephemeral key standing in for " + s.real }

// drySigning checks what the configured signer needs, without signing anything anywhere:
// the identity token's claims (keyless), the key (a file decrypts, a KMS key returns its
// public key), and that the Sigstore services answer. The steps then sign with a stand-in.
func drySigning(ctx context.Context, env *steps.Env, cfg *config.Config, o Options, d *DryRun) error {
	scratch := filepath.Dir(d.StatePath)
	// The release's signed files (SHA256SUMS) the real state kept are reused, as a re-run
	// reuses them, when they verify: the scratch state starts with a copy of them.
	if err := copyDir(filepath.Join(env.StateDir, "blobs"), filepath.Join(scratch, "blobs")); err != nil {
		return fmt.Errorf("dry run: %w", err)
	}
	env.StateDir = scratch
	if cfg.Signing.Mode == "ephemeral" {
		return &config.Error{File: o.Config, Msg: errEphemeral, Fix: "use signing.mode keyless or key, or run with --local"}
	}
	if !signs(o.Steps) {
		return nil
	}
	var endpoints []attest.Endpoint
	var realKey root.TrustedMaterial // a plain key's: its signatures already attached count
	var realSigs *attest.Verifier    // keyless: what the run's identity already signed counts
	what := cfg.Signing.Mode
	env.Classic = classicWanted(cfg, true)
	switch cfg.Signing.Mode {
	case "keyless":
		s, err := dryKeyless(ctx, cfg, o, d)
		if err != nil {
			return nil // the failed check says why; the steps do not run
		}
		endpoints, what = s.Endpoints(), "keyless signing"
		env.Classic = classicWanted(cfg, s.CanSignClassic())
		if realSigs, err = expectedIdentity(ctx, cfg, o, s); err != nil {
			return err
		}
	case "key":
		k, f := keyCheck(ctx, cfg, o)
		d.Checks = append(d.Checks, f)
		if k == nil {
			return nil
		}
		var err error
		if env.PublicKey, err = k.PublicKeyPEM(); err != nil {
			return err
		}
		what = "the key " + k.Hint()
		if cfg.Signing.KeyTLog() {
			if err := keyTransparencyLog(ctx, env, k, cfg, o, o.Logger); err != nil {
				d.check("signing.tlog", err, "")
				return nil
			}
			endpoints = k.Endpoints()
		} else if realKey, err = k.TrustedMaterial(); err != nil {
			return err
		}
	default:
		return &config.Error{File: o.Config, Msg: fmt.Sprintf("signing.mode %s is not available in this build of relay", cfg.Signing.Mode), Fix: "use signing.mode keyless or key"}
	}
	client := &http.Client{Transport: httpx.WriteGuard(o.chain(ctx).Transport())}
	for _, e := range endpoints {
		d.check(fmt.Sprintf("%s %s", e.Service, e.URL), answers(ctx, client, e.URL), "answers")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ks, err := attest.NewKeySigner(key)
	if err != nil {
		return err
	}
	tm, err := ks.TrustedMaterial()
	if err != nil {
		return err
	}
	if env.Verifier, err = attest.NewKeyVerifier(tm); err != nil {
		return err
	}
	if realKey != nil {
		// What a real run signed with the key is reused, as the real run reuses it.
		rv, err := attest.NewKeyVerifier(realKey)
		if err != nil {
			return err
		}
		env.Verifier = attest.AnyVerifier(env.Verifier, rv)
	}
	if realSigs != nil {
		env.Verifier = attest.AnyVerifier(env.Verifier, realSigs)
	}
	env.Signer = standIn{KeySigner: ks, real: what}
	return nil
}

// dryKeyless builds the real keyless signer, which calls nothing when made, and checks the
// identity token the way signing would before Fulcio sees it.
func dryKeyless(ctx context.Context, cfg *config.Config, o Options, d *DryRun) (*attest.KeylessSigner, error) {
	tokens, err := tokenSource(cfg, o)
	if err != nil {
		d.check("signing identity (keyless)", err, "")
		return nil, err
	}
	s, _, err := keyless(ctx, cfg, o, o.Logger)
	if err != nil {
		d.check("Sigstore instance", err, "")
		return nil, err
	}
	sub, err := s.CheckIdentity(ctx)
	d.check("signing identity (keyless)", err, "identity token from "+tokens.Name()+": Fulcio would take it (subject "+sub+")")
	return s, err
}

// expectedIdentity verifies bundles of the identity the run's certificate will name, read
// from the token's claims as Fulcio maps them: what a real run signed keylessly is reused by
// the dry run, as a re-run reuses it. nil where the mapping is not known (the dry run then
// predicts signing again, which is the safe side).
func expectedIdentity(ctx context.Context, cfg *config.Config, o Options, s *attest.KeylessSigner) (*attest.Verifier, error) {
	p, ok, err := s.ExpectedPolicy(ctx)
	if err != nil || !ok {
		return nil, nil // the identity check already reported a token that cannot be had
	}
	tm, _, _, err := sigstoreInstance(cfg, o)
	if err != nil {
		return nil, err
	}
	return attest.NewIdentityVerifier(tm, p)
}

// answers says whether a service is up: any answer below 500 to a GET of its URL.
func answers(ctx context.Context, c *http.Client, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("does not answer: %w (fix: check signing.signing_config, or try later)", err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("answers %s (fix: try later, or use another instance)", resp.Status)
	}
	return nil
}

// dryPublisher records the release the configured target would publish, after the checks
// its Prepare makes (read-only).
func dryPublisher(ctx context.Context, cfg *config.Config, o Options, out string, d *DryRun) (*release.Recorder, error) {
	if cfg.Release.Target == "github" && cfg.Release.GitHub != nil {
		d.Checks = append(d.Checks, githubCredentialCheck(o, cfg)...)
		tok, err := githubToken(ctx, o, cfg)
		if err == nil {
			var gh *release.GitHub
			gh, err = release.NewGitHub(release.GitHubOptions{
				Repository: cfg.Release.GitHub.Repository, BaseURL: cfg.Release.GitHub.BaseURL, Token: tok,
				Replace: o.Replace, Logger: o.Logger, Transport: httpx.WriteGuard(o.chain(ctx).Transport()), Retrier: o.chain(ctx).Retrier(),
			})
			if err == nil {
				return release.NewRecorder("github", gh), nil
			}
		}
		return release.NewRecorder("github", failingPlanner{err}), nil
	}
	dir, err := release.NewDir(out, o.Logger)
	if err != nil {
		return nil, err
	}
	return release.NewRecorder("dir", dir), nil
}

type failingPlanner struct{ err error }

func (f failingPlanner) Plan(context.Context, release.Release) (*release.Plan, error) {
	return nil, f.err
}

// dryBuilder stands in for a cloud builder: a dry run starts no build anywhere.
type dryBuilder struct{ kind string }

func (b dryBuilder) Name() string { return b.kind + " (dry run)" }

func (b dryBuilder) Build(context.Context, build.Request) (*build.Result, error) {
	return nil, &build.InputError{Err: fmt.Errorf("a dry run starts no %s build, and the steps after it need the digest it makes: run the build for real first (`relay run --only checkout,build`), then `relay run --dry-run` predicts the rest from that state", b.kind)}
}

// Report is what a dry run found: the checks, the steps that ran, and every write the real
// run would make, per destination.
type Report struct {
	OK         bool             `json:"ok"`
	Error      string           `json:"error,omitempty"`
	Checks     []steps.Finding  `json:"checks"`
	Steps      []string         `json:"steps"`
	Registries []RepositoryPlan `json:"registries"`
	Release    *release.Plan    `json:"release,omitempty"`
	GitHubAtts []int            `json:"githubAttestations,omitempty"`
	Limits     []steps.Finding  `json:"limits,omitempty"`
	Totals     map[string]int64 `json:"totals"`
}

// RepositoryPlan is what the real run would write to one repository.
type RepositoryPlan struct {
	Repository string      `json:"repository"`
	Writes     []oci.Write `json:"writes"`
	// Skipped are blobs the registry already holds: the real run checks and leaves them.
	Skipped []SkippedBlob `json:"skipped,omitempty"`
	Bytes   int64         `json:"bytes"` // uploaded (mounts and skips cost nothing)
}

// SkippedBlob is a blob present already.
type SkippedBlob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Report puts together what the dry run saw; runErr is how the steps ended.
func (d *DryRun) Report(checks []steps.Finding, st *steps.State, stateDir string, runErr error) *Report {
	r := &Report{OK: runErr == nil, Checks: checks}
	for _, c := range checks {
		r.OK = r.OK && c.OK
	}
	if runErr != nil {
		r.Error = runErr.Error()
	}
	for _, c := range st.Completed {
		r.Steps = append(r.Steps, c.Name)
	}
	r.Registries, r.Totals = RepositoryPlans(d.Overlay)
	if d.Publisher != nil {
		r.Release = d.Publisher.Plan()
		r.GitHubAtts = d.Publisher.Attestations()
	}
	r.Limits = limits(st, stateDir, r.Release)
	return r
}

// RepositoryPlans groups an overlay's writes by repository, with the blobs found already
// there, and totals them by kind (uploaded bytes under "bytes", present blobs under
// "skipped").
func RepositoryPlans(ov *oci.Overlay) ([]RepositoryPlan, map[string]int64) {
	totals := map[string]int64{}
	byRepo := map[string]*RepositoryPlan{}
	repo := func(k string) *RepositoryPlan {
		if byRepo[k] == nil {
			byRepo[k] = &RepositoryPlan{Repository: k}
		}
		return byRepo[k]
	}
	for _, w := range ov.Writes() {
		p := repo(w.Registry + "/" + w.Repository)
		p.Writes = append(p.Writes, w)
		totals[w.Kind]++
		if w.Kind == oci.WriteBlob {
			p.Bytes += w.Size
			totals["bytes"] += w.Size
		}
	}
	for k, blobs := range ov.Skipped() {
		p := repo(k)
		for dg, n := range blobs {
			p.Skipped = append(p.Skipped, SkippedBlob{Digest: dg, Size: n})
		}
		sort.Slice(p.Skipped, func(i, j int) bool { return p.Skipped[i].Digest < p.Skipped[j].Digest })
		totals["skipped"] += int64(len(p.Skipped))
	}
	var out []RepositoryPlan
	for _, p := range byRepo {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Repository < out[j].Repository })
	return out, totals
}

// DryRegistry is a registry client whose writes go into an overlay (relay copy --dry-run):
// the same copy and tag code runs, and the overlay says what it would have written. close
// removes the overlay's scratch directory.
func DryRegistry(ctx context.Context, o Options, registries []config.Registry) (client *oci.Client, ov *oci.Overlay, close func(), err error) {
	d, err := newDryRun()
	if err != nil {
		return nil, nil, nil, err
	}
	if client, err = registryClient(ctx, o, registries, true, d.overlay); err != nil {
		d.close()
		return nil, nil, nil, err
	}
	return client, d.Overlay, d.close, nil
}

// limits are the limits the run's own code checked, with how close the run came to each.
func limits(st *steps.State, stateDir string, plan *release.Plan) []steps.Finding {
	var out []steps.Finding
	var largest int64
	var which string
	for _, a := range append(append(append([]steps.Attestation(nil), st.Signatures...), st.SBOMs...), st.Provenance...) {
		for _, f := range []string{a.Bundle, a.Document} {
			if f == "" {
				continue
			}
			if fi, err := os.Stat(filepath.Join(stateDir, f)); err == nil && fi.Size() > largest {
				largest, which = fi.Size(), filepath.Base(f)
			}
		}
	}
	if which != "" {
		out = append(out, steps.Finding{Check: "attestations within GitHub's 16 MiB cap", OK: largest <= sbom.HardCap,
			Note: fmt.Sprintf("largest: %s, %d bytes", which, largest)})
	}
	if plan != nil {
		var big release.PlannedAsset
		for _, a := range plan.Assets {
			if a.Size > big.Size {
				big = a
			}
		}
		out = append(out, steps.Finding{Check: "release assets within 2 GiB, names valid", OK: big.Size <= release.MaxAssetSize,
			Note: fmt.Sprintf("%d assets; largest: %s, %d bytes", len(plan.Assets), big.Name, big.Size)})
	}
	if st.Release != nil && len(st.Release.Tags) > 0 {
		out = append(out, steps.Finding{Check: "tag templates render", OK: true, Note: fmt.Sprintf("%v", st.Release.Tags)})
	}
	for _, b := range st.Builds {
		var plats []string
		for _, p := range b.Platforms {
			plats = append(plats, p.Platform)
		}
		out = append(out, steps.Finding{Check: "platforms of " + b.Name, OK: true, Note: fmt.Sprintf("built %v", plats)})
	}
	return out
}
