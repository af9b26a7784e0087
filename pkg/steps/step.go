// Package steps is relay's pipeline: the Step interface, the typed State, the executor,
// and one file per step. Steps read intent from the config, dependencies from Env and
// results from State; each writes only its own part of the State.
package steps

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/relaydev/relay/internal/telemetry"

	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/logging"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/release"
)

// Step is one stage of the pipeline.
type Step interface {
	Name() string
	// Plan says what the step will do and which inputs it lacks, without any network write.
	Plan(env *Env, st *State) Plan
	Run(ctx context.Context, env *Env, st *State) error
}

// Plan is a step's description for `relay plan`.
type Plan struct {
	Step    string   `json:"step"`
	Does    []string `json:"does"`
	Missing []string `json:"missing,omitempty"`
	// Absent are inputs named in relay.yaml that do not exist (a key or trust file):
	// missing whatever the earlier steps do.
	Absent []string `json:"absent,omitempty"`
	Done   bool     `json:"done,omitempty"`
}

// SBOMGenerator produces SBOM documents by format for one platform manifest.
type SBOMGenerator interface {
	Generate(ctx context.Context, ref name.Digest) (map[string][]byte, error)
}

// Env holds the dependencies of the steps, built once at wiring time. --local and
// --dry-run differ only in what is put here.
type Env struct {
	Config        *config.Config
	Mode          Mode
	Logger        *slog.Logger
	Registry      *oci.Client
	Builder       build.Builder
	Signer        attest.Signer
	Verifier      *attest.Verifier
	SBOM          SBOMGenerator
	Publisher     release.Publisher
	Now           func() time.Time
	StateDir      string // holds the checkout, bundles, SBOM documents and build logs
	SourceRepo    string // the repository to clone (the config's, or --local's snapshot)
	SourceToken   string
	CorrelationID string
	RunnerName    string
	Workflow      string
	Version       string // relay's version
	Jobs          int
	// PublicKey is published with the release when the signer is a plain key.
	PublicKey []byte
	// Classic: also write cosign's classic .sig signatures and .att attestations (resolved
	// from signing.classic and what the signer can do).
	Classic bool
	// MapRepository turns a configured repository into the one to use; --local points
	// every repository into its sandbox registry.
	MapRepository func(string) (name.Repository, error)
}

// All returns the pipeline in order.
func All() []Step {
	return []Step{Checkout{}, Build{}, Copy{}, Sign{}, SBOM{}, Provenance{}, Verify{}, Release{}}
}

// Names lists the step names in order.
func Names() []string {
	var n []string
	for _, s := range All() {
		n = append(n, s.Name())
	}
	return n
}

// Select returns the named steps in pipeline order; unknown names are an error.
func Select(names []string) ([]Step, error) {
	if len(names) == 0 {
		return All(), nil
	}
	want := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		found := false
		for _, s := range All() {
			if s.Name() == n {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown step %q: steps are %s", n, strings.Join(Names(), ", "))
		}
		want[n] = true
	}
	var out []Step
	for _, s := range All() {
		if want[s.Name()] {
			out = append(out, s)
		}
	}
	return out, nil
}

// MissingInputError says a step cannot run because an earlier step's result is absent;
// the CLI maps it to exit code 3.
type MissingInputError struct {
	Step    string
	Missing []string
}

func (e *MissingInputError) Error() string {
	return fmt.Sprintf("step %s cannot run: missing %s (fix: run the earlier steps first, e.g. `relay run`, or pass the --state that holds them)", e.Step, strings.Join(e.Missing, ", "))
}

// StepError wraps the failure of one step; the CLI maps it to exit code 1.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return fmt.Sprintf("step %s failed: %v", e.Step, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// ErrInterrupted is returned when a signal cancelled the run; the state is saved.
var ErrInterrupted = errors.New("interrupted: the state is saved, re-run the same command to resume")

// Executor runs steps in order, saving the state after each.
type Executor struct {
	Env       *Env
	StatePath string
	// Force re-runs steps the state marks as done (single-step commands).
	Force bool
	// Ran are the steps Run completed, in order (not those the state already held).
	Ran []string
}

// Run executes steps against st.
func (x *Executor) Run(ctx context.Context, steps []Step, st *State) error {
	env := x.Env
	for _, s := range steps {
		log := env.Logger.With("step", s.Name())
		if st.Done(s.Name()) && !x.Force {
			log.Info("step already done, skipping", "event", logging.EventStepSkipped)
			continue
		}
		if p := s.Plan(env, st); len(p.Missing) > 0 {
			return &MissingInputError{Step: s.Name(), Missing: p.Missing}
		}
		if err := ctx.Err(); err != nil {
			return ErrInterrupted
		}
		start := env.Now()
		sctx, span := stepSpan(ctx, env, s.Name())
		if sc := span.SpanContext(); sc.IsValid() {
			log = log.With("span_id", sc.SpanID().String())
		}
		log.Info("step started", "event", logging.EventStepStarted)
		senv := *env
		senv.Logger = log
		err := s.Run(sctx, &senv, st)
		endSpan(span, err)
		end := env.Now()
		dur := end.Sub(start).Milliseconds()
		if err == nil {
			st.markDone(StepRecord{Name: s.Name(), StartedAt: start.UTC(), FinishedAt: end.UTC(), DurationMS: dur})
			x.Ran = append(x.Ran, s.Name())
		}
		if serr := st.Save(x.StatePath); serr != nil {
			if err == nil {
				err = serr
			}
			log.Error("saving state failed", "error", serr)
		}
		if err != nil {
			if ctx.Err() != nil {
				log.Warn("step interrupted", "event", logging.EventStepFailed, "duration_ms", dur)
				return ErrInterrupted
			}
			err = oci.ExplainAccess(err) // a registry's 401/403 names what to grant, not a Go map
			log.Error("step failed", "event", logging.EventStepFailed, "error", err, "duration_ms", dur)
			var mi *MissingInputError
			if errors.As(err, &mi) {
				return err
			}
			return &StepError{Step: s.Name(), Err: err}
		}
		log.Info("step finished", "event", logging.EventStepFinished, "duration_ms", dur)
	}
	return nil
}

// taskTypes are OpenTelemetry's CI/CD task types of the steps that have one.
var taskTypes = map[string]string{"build": "build", "verify": "test", "copy": "deploy", "release": "deploy"}

// stepSpan starts the step's span (CI/CD semantic conventions: a pipeline task) under the
// run's; its context reaches every request the step makes.
func stepSpan(ctx context.Context, env *Env, name string) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{attribute.String("cicd.pipeline.task.name", name), attribute.String("cicd.pipeline.task.run.id", env.CorrelationID+"/"+name)}
	if t, ok := taskTypes[name]; ok {
		attrs = append(attrs, attribute.String("cicd.pipeline.task.type", t))
	}
	return telemetry.Tracer(ctx).Start(ctx, "relay "+name, trace.WithAttributes(attrs...))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
