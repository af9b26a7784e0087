package report

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/source"
	"github.com/relaydev/relay/pkg/steps"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	identity = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v0.2.0"
	issuer   = "https://token.actions.githubusercontent.com"
	commit   = "0123456789abcdef0123456789abcdef01234567"
	index    = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
)

// writeKeylessBundle writes a signature bundle whose certificate names identity and
// issuer as Fulcio's do (SAN URI, OID 1.3.6.1.4.1.57264.1.8).
func writeKeylessBundle(t *testing.T, dir string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(identity)
	iv, _ := asn1.MarshalWithParams(issuer, "utf8")
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{}, NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1e10, 0), URIs: []*url.URL{u},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}, Value: iv}}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	b := `{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"certificate":{"rawBytes":"` + base64.StdEncoding.EncodeToString(der) +
		`"}},"messageSignature":{"messageDigest":{"algorithm":"SHA2_256","digest":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"},"signature":"c2ln"}}`
	os.MkdirAll(filepath.Join(dir, "bundles"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "bundles", "sig.sigstore.json"), []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func plats() []oci.Manifest {
	return []oci.Manifest{{Platform: "linux/amd64", Digest: "sha256:" + strings.Repeat("a", 64)}, {Platform: "linux/arm64", Digest: "sha256:" + strings.Repeat("b", 64)}}
}

// released is the state of a whole release: each step's part, added in pipeline order.
func released(dir string) []func(*steps.State) {
	return []func(*steps.State){
		func(st *steps.State) {
			st.Source = &source.Result{Repo: "https://github.com/acme/app", Ref: "v0.2.0", Tag: "v0.2.0", Commit: commit}
		},
		func(st *steps.State) {
			st.Builds = []steps.BuiltImage{{Name: "hello", Result: build.Result{Ref: "acme.azurecr.io/build/hello@" + index, Digest: index, Platforms: plats()}}}
		},
		func(st *steps.State) {
			st.Copies = []steps.CopiedImage{
				{Name: "hello", Repository: "ghcr.io/acme/hello", Digest: index, Platforms: plats()},
				{Name: "hello", Repository: "acme.azurecr.io/hello", Digest: index, Platforms: plats()},
			}
		},
		func(st *steps.State) {
			for i := 0; i < 3; i++ {
				st.Signatures = append(st.Signatures, steps.Attestation{Image: "hello", Bundle: "bundles/sig.sigstore.json"})
			}
		},
		func(st *steps.State) { st.SBOMs = make([]steps.Attestation, 4) },
		func(st *steps.State) {
			st.Provenance = []steps.Attestation{{InvocationID: "https://github.com/acme/app/actions/runs/42/attempts/1"}}
		},
		func(st *steps.State) { st.Verification = &steps.Verification{Checked: 16} },
		func(st *steps.State) {
			st.Release = &steps.ReleaseRecord{Target: "github", URL: "https://github.com/acme/app/releases/tag/v0.2.0", Assets: make([]string, 14),
				Tags:         []string{"ghcr.io/acme/hello:v0.2.0", "ghcr.io/acme/hello:latest", "acme.azurecr.io/hello:v0.2.0", "acme.azurecr.io/hello:latest"},
				Attestations: map[string]int64{"sha256:x": 1}, PinFile: "images.lock.json"}
		},
	}
}

var stepNames = []string{"checkout", "build", "copy", "sign", "sbom", "provenance", "verify", "release"}

func actionsEnv(k string) string {
	return map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/app"}[k]
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	testutil.Golden(t, filepath.Join("testdata", name), []byte(got), *update)
}

// TestReport: the card of a whole run, the rows of a release made step by step (one
// coherent summary), a failure mid-run and one before any step — outputs, Markdown and
// JSON against golden files.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	writeKeylessBundle(t, dir)
	opts := Options{Mode: "release", StatePath: ".relay/state.json", StateDir: dir, Getenv: actionsEnv}
	full := &steps.State{CorrelationID: "cid-1"}
	for i, add := range released(dir) {
		add(full)
		full.Completed = append(full.Completed, steps.StepRecord{Name: stepNames[i], DurationMS: int64(100 * (i + 1))})
	}
	t.Run("whole run", func(t *testing.T) {
		o := opts
		o.Command, o.Ran = "relay run", stepNames
		r := New(full, o)
		golden(t, "run.md", r.Markdown())
		golden(t, "run.outputs", strings.ReplaceAll(r.Outputs(), dir, "STATEDIR"))
		j, err := r.JSON()
		if err != nil {
			t.Fatal(err)
		}
		golden(t, "run.json", strings.ReplaceAll(string(j), dir, "STATEDIR"))
		var back Result
		if err := json.Unmarshal(j, &back); err != nil || !back.OK || len(back.Verify) != 3 {
			t.Fatalf("json: %v %+v", err, back)
		}
	})
	t.Run("re-run of a finished release", func(t *testing.T) {
		o := opts
		o.Command = "relay run" // nothing left to run
		if md := New(full, o).Markdown(); !strings.HasPrefix(md, "### relay released v0.2.0") {
			t.Fatalf("markdown:\n%s", md)
		}
		o.Command = "relay sign" // a single step that ran nothing says nothing
		if md := New(full, o).Markdown(); md != "" {
			t.Fatalf("markdown:\n%s", md)
		}
	})
	t.Run("step by step", func(t *testing.T) {
		// Each step's own invocation appends to the job's summary; together they read as one.
		st := &steps.State{CorrelationID: "cid-1"}
		var md strings.Builder
		for i, add := range released(dir) {
			add(st)
			st.Completed = append(st.Completed, steps.StepRecord{Name: stepNames[i], DurationMS: int64(100 * (i + 1))})
			o := opts
			o.Command, o.Ran = "relay "+stepNames[i], []string{stepNames[i]}
			md.WriteString(New(st, o).Markdown())
		}
		golden(t, "steps.md", md.String())
		if strings.Count(md.String(), "| image |") != 1 {
			t.Fatalf("the image table appears other than once:\n%s", md.String())
		}
	})
	t.Run("failed mid-run", func(t *testing.T) {
		st := &steps.State{CorrelationID: "cid-1"}
		for i, add := range released(dir)[:3] {
			add(st)
			st.Completed = append(st.Completed, steps.StepRecord{Name: stepNames[i], DurationMS: 10})
		}
		o := opts
		o.Command, o.Ran = "relay run", stepNames[:3]
		o.Err = &steps.StepError{Step: "sign", Err: errors.New("fulcio: 403 token s3cr3t\nrejected")}
		o.Redact = func(s string) string { return strings.ReplaceAll(s, "s3cr3t", "***") }
		r := New(st, o)
		golden(t, "failed.md", r.Markdown())
		golden(t, "failed.outputs", r.Outputs())
		if r.OK || r.Failure.Step != "sign" || strings.Contains(r.Failure.Error, "s3cr3t") {
			t.Fatalf("failure %+v", r.Failure)
		}
	})
	t.Run("failed before any step", func(t *testing.T) {
		o := opts
		o.Command, o.Err = "relay run", errors.New("relay.yaml:2: source.ref is missing")
		r := New(nil, o)
		md := r.Markdown()
		if !strings.Contains(md, "relay failed before any step:** relay.yaml:2: source.ref is missing") || !strings.Contains(md, "nothing ran") || strings.Contains(md, "| image |") {
			t.Fatalf("markdown:\n%s", md)
		}
		if r.Outputs() != "completed-steps=[]\n" {
			t.Fatalf("outputs %q", r.Outputs())
		}
	})
}

// TestOutputsAndSummaryOfASingleStep: the outputs each step knows, and the summary's
// rows — the assertions of the first GitHub outputs test, kept.
func TestOutputsAndSummaryOfASingleStep(t *testing.T) {
	st := &steps.State{
		Builds:    []steps.BuiltImage{{Name: "hello", Result: build.Result{Digest: "sha256:aa"}}},
		Copies:    []steps.CopiedImage{{Name: "hello", Repository: "ghcr.io/acme/hello", Digest: "sha256:aa", Platforms: []oci.Manifest{{Platform: "linux/amd64"}, {Platform: "linux/arm64"}}}},
		Completed: []steps.StepRecord{{Name: "checkout", DurationMS: 12}, {Name: "build", DurationMS: 340}},
		Release:   &steps.ReleaseRecord{URL: "file:///dist"},
	}
	r := New(st, Options{Ran: []string{"checkout", "build", "release"}})
	want := "hello-digest=sha256:aa\nhello-ref=ghcr.io/acme/hello@sha256:aa\n" +
		`image=ghcr.io/acme/hello@sha256:aa` + "\ndigest=sha256:aa\n" +
		`images=[{"name":"hello","reference":"ghcr.io/acme/hello@sha256:aa","digest":"sha256:aa","platforms":["linux/amd64","linux/arm64"],"tags":[]}]` + "\n" +
		"release-url=file:///dist\ncompleted-steps=[\"checkout\",\"build\"]\n"
	if got := r.Outputs(); got != want {
		t.Fatalf("GITHUB_OUTPUT:\n%s\nwant:\n%s", got, want)
	}
	s := r.Markdown()
	for _, w := range []string{"| hello | `ghcr.io/acme/hello@sha256:aa` | linux/amd64, linux/arm64 |", "| build | 340 ms |"} {
		if !strings.Contains(s, w) {
			t.Errorf("summary lacks %q:\n%s", w, s)
		}
	}
	// A step that left nothing to show writes no summary at all, never an empty table.
	if md := New(&steps.State{}, Options{}).Markdown(); md != "" {
		t.Fatalf("empty run wrote %q", md)
	}
}
