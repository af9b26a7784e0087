package attest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Predicate types relay writes.
const (
	PredicateSign       = "https://sigstore.dev/cosign/sign/v1"
	PredicateSPDX       = "https://spdx.dev/Document"
	PredicateCycloneDX  = "https://cyclonedx.org/bom"
	PredicateSLSA       = "https://slsa.dev/provenance/v1"
	BuildTypeURI        = "https://github.com/relaydev/relay/blob/main/docs/provenance.md#buildtype-v1"
	DefaultBuilderIDURI = "https://github.com/relaydev/relay/runner"
)

// Subject is an artifact a statement is about.
type Subject struct {
	Name   string // repository or image reference without digest
	Digest string // sha256:...
}

// Statement builds an in-toto v1 statement as canonical JSON (sorted keys), so the
// same inputs always give the same bytes and golden files stay stable.
func Statement(subjects []Subject, predicateType string, predicate []byte) ([]byte, error) {
	if len(subjects) == 0 {
		return nil, fmt.Errorf("statement %s has no subject", predicateType)
	}
	var pred structpb.Struct
	if len(predicate) == 0 {
		predicate = []byte("{}")
	}
	if err := protojson.Unmarshal(predicate, &pred); err != nil {
		return nil, fmt.Errorf("predicate %s is not a JSON object: %w", predicateType, err)
	}
	st := &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		PredicateType: predicateType,
		Predicate:     &pred,
	}
	for _, s := range subjects {
		algo, hex, ok := strings.Cut(s.Digest, ":")
		if !ok {
			return nil, fmt.Errorf("subject %s: digest %q is not ALGO:HEX", s.Name, s.Digest)
		}
		st.Subject = append(st.Subject, &intoto.ResourceDescriptor{Name: s.Name, Digest: map[string]string{algo: hex}})
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("statement %s: %w", predicateType, err)
	}
	return canonical(st)
}

func canonical(m proto.Message) ([]byte, error) {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// ParseStatement decodes an in-toto statement.
func ParseStatement(b []byte) (*intoto.Statement, error) {
	var st intoto.Statement
	if err := protojson.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parsing in-toto statement: %w", err)
	}
	return &st, nil
}

// ProvenanceInput is everything relay knows about how the artifacts were made.
type ProvenanceInput struct {
	Subjects      []Subject
	Repository    string // source repository
	Ref           string
	Commit        string
	Workflow      string // e.g. GITHUB_WORKFLOW_REF, or "relay run --local"
	ConfigDigest  string // sha256 of relay.yaml
	Builder       string // builder backend
	BuilderRunIDs map[string]string
	BaseImages    []string  // digests (OCI layout bases)
	Bases         []BaseRef // registry bases, per platform
	BuilderID     string    // runner identity
	InvocationID  string    // correlation id
	StartedOn     time.Time
	FinishedOn    time.Time
	BuildLogs     map[string]string // image -> sha256 of its build log
	RelayVersion  string
}

// BaseRef is a registry base image one platform was built on.
type BaseRef struct{ Name, Digest, Platform string }

// Provenance returns a SLSA v1 provenance statement (canonical JSON).
func Provenance(in ProvenanceInput) ([]byte, error) {
	ext, err := structpb.NewStruct(map[string]any{
		"repository": in.Repository,
		"ref":        in.Ref,
		"workflow":   in.Workflow,
		"config":     map[string]any{"digest": anyMap(digestMap(in.ConfigDigest))},
	})
	if err != nil {
		return nil, err
	}
	runs := map[string]any{}
	for k, v := range in.BuilderRunIDs {
		runs[k] = v
	}
	internal, err := structpb.NewStruct(map[string]any{"builder": in.Builder, "runIds": runs})
	if err != nil {
		return nil, err
	}
	src := &intoto.ResourceDescriptor{Digest: map[string]string{"gitCommit": in.Commit}}
	if in.Repository != "" { // --local of a plain folder: no page to name, the commit says it all
		src.Uri = "git+" + in.Repository + "@" + in.Ref
	}
	deps := []*intoto.ResourceDescriptor{src}
	bases := append([]string(nil), in.BaseImages...)
	sort.Strings(bases)
	for _, b := range bases {
		deps = append(deps, &intoto.ResourceDescriptor{Name: "base-image", Digest: digestMap(b)})
	}
	refs := append([]BaseRef(nil), in.Bases...)
	sort.Slice(refs, func(i, j int) bool { return refs[i].Platform < refs[j].Platform })
	for _, b := range refs {
		ann, err := structpb.NewStruct(map[string]any{"platform": b.Platform})
		if err != nil {
			return nil, err
		}
		// The URI pulls exactly this platform's base: REGISTRY/REPO[:TAG]@sha256:….
		deps = append(deps, &intoto.ResourceDescriptor{Name: "base-image", Uri: b.Name + "@" + b.Digest, Digest: digestMap(b.Digest), Annotations: ann})
	}
	var byproducts []*intoto.ResourceDescriptor
	names := make([]string, 0, len(in.BuildLogs))
	for n := range in.BuildLogs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		byproducts = append(byproducts, &intoto.ResourceDescriptor{Name: "build-log/" + n, Digest: digestMap(in.BuildLogs[n]), MediaType: "text/plain"})
	}
	builderID := in.BuilderID
	if builderID == "" {
		builderID = DefaultBuilderIDURI
	}
	p := &slsa.Provenance{
		BuildDefinition: &slsa.BuildDefinition{
			BuildType:            BuildTypeURI,
			ExternalParameters:   ext,
			InternalParameters:   internal,
			ResolvedDependencies: deps,
		},
		RunDetails: &slsa.RunDetails{
			Builder: &slsa.Builder{Id: builderID, Version: map[string]string{"relay": in.RelayVersion}},
			Metadata: &slsa.BuildMetadata{
				InvocationId: in.InvocationID,
				StartedOn:    timestamppb.New(in.StartedOn.UTC()),
				FinishedOn:   timestamppb.New(in.FinishedOn.UTC()),
			},
			Byproducts: byproducts,
		},
	}
	pred, err := protojson.Marshal(p)
	if err != nil {
		return nil, err
	}
	return Statement(in.Subjects, PredicateSLSA, pred)
}

func digestMap(d string) map[string]string {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok {
		return map[string]string{"sha256": d}
	}
	return map[string]string{algo: hex}
}

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ProvenanceRunFields are the fields of relay's SLSA provenance that name the run rather
// than what was built: two statements that differ only in them describe the same release
// (a reproducible rebuild in a retry from scratch has its own builder run ids and build
// log, and yields the same digests from the same source, config and builder).
var ProvenanceRunFields = []string{
	"runDetails.metadata.invocationId", "runDetails.metadata.startedOn", "runDetails.metadata.finishedOn",
	"buildDefinition.internalParameters.runIds", "runDetails.byproducts",
}

// SameProvenance reports whether an attached statement says what want (a statement from
// Provenance) says, apart from ProvenanceRunFields; it also returns the attached
// statement's invocation id.
func SameProvenance(got *intoto.Statement, want []byte) (bool, string, error) {
	diff, inv, err := ProvenanceDiff(got, want)
	return len(diff) == 0 && err == nil, inv, err
}

// ProvenanceDiff lists the fields (dotted paths) in which an attached statement differs
// from want, apart from ProvenanceRunFields, and returns its invocation id.
func ProvenanceDiff(got *intoto.Statement, want []byte) ([]string, string, error) {
	g, err := canonical(got)
	if err != nil {
		return nil, "", err
	}
	var gm, wm map[string]any
	if err := json.Unmarshal(g, &gm); err != nil {
		return nil, "", err
	}
	if err := json.Unmarshal(want, &wm); err != nil {
		return nil, "", fmt.Errorf("provenance statement: %w", err)
	}
	inv := stripRunFields(gm)
	stripRunFields(wm)
	var diff []string
	diffPaths(gm, wm, "", &diff)
	return diff, inv, nil
}

func diffPaths(a, b any, at string, out *[]string) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		ab, _ := json.Marshal(a)
		bb, _ := json.Marshal(b)
		if !bytes.Equal(ab, bb) {
			*out = append(*out, strings.TrimPrefix(at, "."))
		}
		return
	}
	keys := map[string]bool{}
	for k := range am {
		keys[k] = true
	}
	for k := range bm {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		diffPaths(am[k], bm[k], at+"."+k, out)
	}
}

// stripRunFields deletes ProvenanceRunFields from a decoded statement and returns the
// invocation id it held.
func stripRunFields(stmt map[string]any) string {
	inv := ""
	for _, f := range ProvenanceRunFields {
		parts := strings.Split(f, ".")
		node, _ := stmt["predicate"].(map[string]any)
		for _, p := range parts[:len(parts)-1] {
			node, _ = node[p].(map[string]any)
		}
		if node == nil {
			continue
		}
		last := parts[len(parts)-1]
		if last == "invocationId" {
			inv, _ = node[last].(string)
		}
		delete(node, last)
	}
	return inv
}
