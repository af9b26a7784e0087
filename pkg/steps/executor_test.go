package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/pkg/logging"
)

type fakeStep struct {
	name    string
	missing []string
	run     func(ctx context.Context, st *State) error
	calls   *int
}

func (f fakeStep) Name() string           { return f.name }
func (f fakeStep) Plan(*Env, *State) Plan { return Plan{Step: f.name, Missing: f.missing} }
func (f fakeStep) Run(ctx context.Context, _ *Env, st *State) error {
	*f.calls++
	if f.run != nil {
		return f.run(ctx, st)
	}
	return nil
}

func testEnv(t *testing.T, logs *bytes.Buffer) *Env {
	t.Helper()
	l, err := logging.New(logs, logging.Options{Format: "json", CorrelationID: "cid", RunnerName: "r"})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &Env{Logger: l, Now: func() time.Time { clock = clock.Add(time.Second); return clock }}
}

func TestExecutorResumesAndInterrupts(t *testing.T) {
	var logs bytes.Buffer
	env := testEnv(t, &logs)
	path := filepath.Join(t.TempDir(), "state.json")
	var a, b, c int
	ctx, cancel := context.WithCancel(context.Background())
	steps := []Step{
		fakeStep{name: "a", calls: &a, run: func(_ context.Context, st *State) error { st.Source = nil; return nil }},
		fakeStep{name: "b", calls: &b, run: func(ctx context.Context, _ *State) error {
			cancel() // a signal arrives while b runs
			<-ctx.Done()
			return ctx.Err()
		}},
		fakeStep{name: "c", calls: &c},
	}
	st := NewState(ModeLocal, Inputs{ConfigDigest: "sha256:x", Ref: "v1"}, "cid", time.Unix(0, 0))
	x := &Executor{Env: env, StatePath: path}
	if err := x.Run(ctx, steps, st); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("err = %v, want ErrInterrupted", err)
	}
	saved, err := LoadState(path)
	if err != nil || saved == nil {
		t.Fatalf("state not saved: %v", err)
	}
	if !saved.Done("a") || saved.Done("b") || c != 0 {
		t.Fatalf("completed %+v, c ran %d times", saved.Completed, c)
	}
	if saved.Completed[0].DurationMS != 1000 {
		t.Fatalf("duration from the injected clock: %+v", saved.Completed[0])
	}

	// Resume: a is skipped, b and c run.
	steps[1] = fakeStep{name: "b", calls: &b}
	if err := x.Run(context.Background(), steps, saved); err != nil {
		t.Fatal(err)
	}
	if a != 1 || b != 2 || c != 1 {
		t.Fatalf("calls a=%d b=%d c=%d", a, b, c)
	}
	for _, line := range bytes.Split(bytes.TrimSpace(logs.Bytes()), []byte("\n")) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil || rec["correlation_id"] != "cid" {
			t.Fatalf("log line %s: %v", line, err)
		}
	}
	if !strings.Contains(logs.String(), `"event":"step.skipped"`) {
		t.Fatal("skip not logged")
	}

	// Force re-runs done steps.
	x.Force = true
	if err := x.Run(context.Background(), steps[:1], saved); err != nil || a != 2 {
		t.Fatalf("force: err %v a=%d", err, a)
	}
}

func TestExecutorErrors(t *testing.T) {
	var logs bytes.Buffer
	env := testEnv(t, &logs)
	path := filepath.Join(t.TempDir(), "state.json")
	var n int
	st := NewState(ModeRelease, Inputs{}, "cid", time.Unix(0, 0))
	x := &Executor{Env: env, StatePath: path}

	err := x.Run(context.Background(), []Step{fakeStep{name: "m", calls: &n, missing: []string{"the build"}}}, st)
	var mi *MissingInputError
	if !errors.As(err, &mi) || n != 0 || !strings.Contains(err.Error(), "the build") {
		t.Fatalf("missing input: %v (ran %d)", err, n)
	}
	boom := errors.New("boom")
	err = x.Run(context.Background(), []Step{fakeStep{name: "f", calls: &n, run: func(context.Context, *State) error { return boom }}}, st)
	var se *StepError
	if !errors.As(err, &se) || se.Step != "f" || !errors.Is(err, boom) {
		t.Fatalf("step error: %v", err)
	}
	if saved, _ := LoadState(path); saved == nil || saved.Done("f") {
		t.Fatal("failed step must be saved as not done")
	}
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.json")
	if s, err := LoadState(p); s != nil || err != nil {
		t.Fatalf("missing state: %v %v", s, err)
	}
	os.WriteFile(p, []byte("{"), 0o644)
	var se *StateError
	if _, err := LoadState(p); !errors.As(err, &se) || !strings.Contains(err.Error(), "--restart") {
		t.Fatalf("corrupt state: %v", err)
	}
	os.WriteFile(p, []byte(`{"version": 9}`), 0o644)
	if _, err := LoadState(p); !errors.As(err, &se) || !strings.Contains(err.Error(), "schema version 9") {
		t.Fatalf("future state: %v", err)
	}
	st := NewState(ModeLocal, Inputs{Ref: "v1"}, "c", time.Unix(5, 0))
	st.markDone(StepRecord{Name: "checkout"})
	st.markDone(StepRecord{Name: "checkout", DurationMS: 3})
	if err := st.Save(p); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(p)
	if err != nil || len(got.Completed) != 1 || got.Completed[0].DurationMS != 3 || got.Mode != ModeLocal {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
}

func TestSelect(t *testing.T) {
	s, err := Select([]string{"release", "build"})
	if err != nil || len(s) != 2 || s[0].Name() != "build" {
		t.Fatalf("Select = %v %v", s, err)
	}
	if _, err := Select([]string{"deploy"}); err == nil || !strings.Contains(err.Error(), "checkout, build") {
		t.Fatalf("unknown step: %v", err)
	}
}

func TestRenderTags(t *testing.T) {
	st := &State{}
	st.Source = sourceResult("v1.2.3", "0123456789abcdef0123")
	got, err := renderTags([]string{"{{ .Version }}", "latest", "sha-{{ .ShortCommit }}"}, st)
	if err != nil || strings.Join(got, ",") != "v1.2.3,latest,sha-0123456789ab" {
		t.Fatalf("tags %v %v", got, err)
	}
	st.Source = sourceResult("", "0123456789abcdef0123")
	if got, _ := renderTags([]string{"{{ .Version }}"}, st); got[0] != "0123456789ab" {
		t.Fatalf("untagged version %v", got)
	}
	for _, bad := range []string{"{{ .Nope }}", "{{ .Version", "-{{ .Version }}"} {
		if _, err := renderTags([]string{bad}, st); err == nil {
			t.Errorf("template %q accepted", bad)
		}
	}
}
