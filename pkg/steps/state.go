package steps

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/relaydev/relay/internal/fsutil"
	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/source"
)

// StateVersion is the schema version of the state file.
const StateVersion = 1

// Mode says what kind of run made a state.
type Mode string

// Modes.
const (
	ModeRelease Mode = "release"
	ModeLocal   Mode = "local"
	ModeDryRun  Mode = "dry-run"
)

// State is the typed, versioned result of a run. Each field is written by one step.
type State struct {
	Version       int          `json:"version"`
	Mode          Mode         `json:"mode"`
	Inputs        Inputs       `json:"inputs"`
	CorrelationID string       `json:"correlation_id"`
	CreatedAt     time.Time    `json:"created_at"`
	Completed     []StepRecord `json:"completed"`

	Source       *source.Result `json:"source,omitempty"`       // checkout
	Builds       []BuiltImage   `json:"builds,omitempty"`       // build
	Copies       []CopiedImage  `json:"copies,omitempty"`       // copy
	Signatures   []Attestation  `json:"signatures,omitempty"`   // sign
	SBOMs        []Attestation  `json:"sboms,omitempty"`        // sbom
	Provenance   []Attestation  `json:"provenance,omitempty"`   // provenance
	Assets       []ProjectAsset `json:"assets,omitempty"`       // provenance: the release.assets it names
	Verification *Verification  `json:"verification,omitempty"` // verify
	Release      *ReleaseRecord `json:"release,omitempty"`      // release
}

// Inputs identify what a state was made for; a run with other inputs starts over.
type Inputs struct {
	ConfigDigest string `json:"config_digest"`
	Repo         string `json:"repo"`
	Ref          string `json:"ref"`
}

// StepRecord marks a completed step.
type StepRecord struct {
	Name       string    `json:"name"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	DurationMS int64     `json:"duration_ms"`
}

// BuiltImage is one image as the builder pushed it.
type BuiltImage struct {
	Name      string `json:"name"`
	LogFile   string `json:"log_file,omitempty"`
	LogDigest string `json:"log_digest,omitempty"`
	build.Result
}

// CopiedImage is one image in one target repository, by digest.
type CopiedImage struct {
	Name       string         `json:"name"`
	Repository string         `json:"repository"`
	Digest     string         `json:"digest"`
	MediaType  string         `json:"media_type"`
	Size       int64          `json:"size"`
	Platforms  []oci.Manifest `json:"platforms"`
}

// Ref is repository@digest.
func (c CopiedImage) Ref() string { return c.Repository + "@" + c.Digest }

// Attestation is one signed statement about one digest, attached in every target.
type Attestation struct {
	Image         string            `json:"image"`
	Subject       string            `json:"subject"` // digest the bundle is attached to
	Platform      string            `json:"platform,omitempty"`
	PredicateType string            `json:"predicate_type"`
	Format        string            `json:"format,omitempty"` // sbom format
	Bundle        string            `json:"bundle"`           // path of the bundle, relative to the state directory
	BundleDigest  string            `json:"bundle_digest"`
	Document      string            `json:"document,omitempty"` // predicate as a file (SBOM), relative to the state directory
	Referrers     map[string]string `json:"referrers"`          // repository -> referrer manifest digest
	Reused        bool              `json:"reused,omitempty"`
	// InvocationID is the provenance's runDetails.metadata.invocationId.
	InvocationID string `json:"invocation_id,omitempty"`
}

// Verification records what verify checked.
type Verification struct {
	Checked  int       `json:"checked"`
	Verified []string  `json:"verified"`
	At       time.Time `json:"at"`
	// Duplicates are valid referrers repeating another (runs on two states that raced).
	Duplicates []string `json:"duplicates,omitempty"`
}

// ReleaseRecord records what release published.
type ReleaseRecord struct {
	Target string   `json:"target"`
	URL    string   `json:"url"`
	Tags   []string `json:"tags"`
	Assets []string `json:"assets"`
	// PinFile is images.lock.json as published, kept beside the state (relative to its
	// directory, like the bundles: a cached state may be restored elsewhere).
	PinFile string `json:"pin_file,omitempty"`
	// Attestations maps bundle digests to the ids GitHub's attestations API gave them, so a
	// resumed release does not upload one twice.
	Attestations map[string]int64 `json:"attestations,omitempty"`
}

// NewState starts a state for the given inputs.
func NewState(mode Mode, in Inputs, correlationID string, now time.Time) *State {
	return &State{Version: StateVersion, Mode: mode, Inputs: in, CorrelationID: correlationID, CreatedAt: now.UTC()}
}

// Invocation is the run the release names: the invocation id of its provenance (which a
// retry may reuse from an earlier run), else the correlation id of the run that made the
// state; never the id of a run that only resumed it.
func (s *State) Invocation() string {
	for _, p := range s.Provenance {
		if p.InvocationID != "" {
			return p.InvocationID
		}
	}
	return s.CorrelationID
}

// Done reports whether a step completed.
func (s *State) Done(step string) bool {
	for _, r := range s.Completed {
		if r.Name == step {
			return true
		}
	}
	return false
}

// DryRunFrom is a dry run's state that continues real, a real run's state for the same
// inputs, after its checkout and build: a dry run starts no cloud build, and the real run
// resumed from real would not build again either. ok is false when real has no build to
// continue from.
func DryRunFrom(real *State, in Inputs, correlationID string, now time.Time) (st *State, ok bool) {
	if real == nil || real.Mode != ModeRelease || real.Inputs != in || !real.Done("checkout") || !real.Done("build") || real.Source == nil {
		return nil, false
	}
	st = NewState(ModeDryRun, in, correlationID, now)
	for _, r := range real.Completed {
		if r.Name == "checkout" || r.Name == "build" {
			st.Completed = append(st.Completed, r)
		}
	}
	src := *real.Source
	st.Source = &src
	st.Builds = append([]BuiltImage(nil), real.Builds...)
	return st, true
}

func (s *State) markDone(r StepRecord) {
	out := s.Completed[:0]
	for _, c := range s.Completed {
		if c.Name != r.Name {
			out = append(out, c)
		}
	}
	s.Completed = append(out, r)
}

// Build returns the build record of an image.
func (s *State) Build(image string) *BuiltImage {
	for i := range s.Builds {
		if s.Builds[i].Name == image {
			return &s.Builds[i]
		}
	}
	return nil
}

// CopiesOf returns the target copies of an image.
func (s *State) CopiesOf(image string) []CopiedImage {
	var out []CopiedImage
	for _, c := range s.Copies {
		if c.Name == image {
			out = append(out, c)
		}
	}
	return out
}

// StateError is a state file that cannot be used; the CLI maps it to exit code 2.
type StateError struct {
	Path string
	Msg  string
	Fix  string
}

func (e *StateError) Error() string {
	return fmt.Sprintf("state %s: %s (fix: %s)", e.Path, e.Msg, e.Fix)
}

// LoadState reads a state file; a missing file returns (nil, nil).
func LoadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &StateError{Path: path, Msg: err.Error(), Fix: "check the file's permissions or pass another --state"}
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, &StateError{Path: path, Msg: "not a relay state file: " + err.Error(), Fix: "pass --restart to start over, or another --state"}
	}
	if s.Version != StateVersion {
		return nil, &StateError{Path: path, Msg: fmt.Sprintf("schema version %d, this relay reads %d", s.Version, StateVersion), Fix: "finish the run with the relay that made it, or pass --restart"}
	}
	return &s, nil
}

// Save writes the state atomically: a crash leaves the old or the new file, never half of one.
func (s *State) Save(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(b, '\n'), 0o644)
}

// WriteFileAtomic is fsutil.WriteFileAtomic, for the steps' files beside the state.
var WriteFileAtomic = fsutil.WriteFileAtomic
