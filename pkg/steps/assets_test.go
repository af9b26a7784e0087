package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/release"
)

// withAssets gives the pipeline's config release.assets and writes the files they match.
func withAssets(t *testing.T, env *Env, globs []string, files map[string]string) {
	t.Helper()
	env.Config.Release.Assets = globs
	for p, body := range files {
		p = filepath.Join(env.Config.Dir, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReleaseAssets: the project's own files are released beside relay's, listed in
// SHA256SUMS, each with a blob bundle over its bytes, and named by the provenance.
func TestReleaseAssets(t *testing.T) {
	ctx := context.Background()
	env, _, out := pipelineEnv(t)
	withAssets(t, env, []string{"bin/dist/app-*", "chart/app-1.0.0.tgz"}, map[string]string{
		"bin/dist/app-linux-amd64": "elf amd64", "bin/dist/app-darwin-arm64": "macho arm64", "chart/app-1.0.0.tgz": "chart",
		"bin/other": "not released",
	})
	st := checkedOut(t, "cid-assets")
	x := &Executor{Env: env, StatePath: filepath.Join(env.StateDir, "state.json")}
	if err := x.Run(ctx, All(), st); err != nil {
		t.Fatal(err)
	}
	sums, _ := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	for _, name := range []string{"app-linux-amd64", "app-darwin-arm64", "app-1.0.0.tgz"} {
		body, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%s not released: %v", name, err)
		}
		digest := "sha256:" + sha(body)
		if !strings.Contains(string(sums), sha(body)+"  "+name+"\n") {
			t.Errorf("SHA256SUMS lacks %s:\n%s", name, sums)
		}
		bundle, err := os.ReadFile(filepath.Join(out, name+".sigstore.json"))
		if err != nil {
			t.Fatalf("%s has no bundle: %v", name, err)
		}
		if _, err := env.Verifier.VerifyStatement(ctx, bundle, digest, attest.PredicateSign); err != nil {
			t.Errorf("%s's bundle does not verify over its bytes: %v", name, err)
		}
		if !strings.Contains(string(sums), "  "+name+".sigstore.json\n") {
			t.Errorf("SHA256SUMS lacks %s's bundle", name)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "other")); !os.IsNotExist(err) {
		t.Fatal("a file no glob names was released")
	}
	// The provenance names each file by digest, as it names the images.
	raw, _ := os.ReadFile(filepath.Join(env.StateDir, st.Provenance[0].Bundle))
	v, err := env.Verifier.VerifyStatement(ctx, raw, st.Copies[0].Digest, attest.PredicateSLSA)
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]string{}
	for _, s := range v.Statement.GetSubject() {
		named[s.GetName()] = s.GetDigest()["sha256"]
	}
	if named["app-linux-amd64"] != sha([]byte("elf amd64")) || named["app-1.0.0.tgz"] != sha([]byte("chart")) || len(st.Assets) != 3 {
		t.Fatalf("provenance subjects %v, state assets %+v", named, st.Assets)
	}
	var m release.Manifest
	mj, _ := os.ReadFile(filepath.Join(out, "release.json"))
	json.Unmarshal(mj, &m)
	if !strings.Contains(strings.Join(m.Assets, ","), "app-darwin-arm64.sigstore.json") {
		t.Fatalf("release.json assets %v", m.Assets)
	}

	// A file rebuilt between the provenance and the release is refused before any tag.
	os.WriteFile(filepath.Join(env.Config.Dir, "bin/dist/app-linux-amd64"), []byte("rebuilt"), 0o755)
	err = (&Executor{Env: env, StatePath: x.StatePath, Force: true}).Run(ctx, []Step{Release{}}, st)
	var pi interface{ PermanentInput() bool }
	if !errors.As(err, &pi) || !strings.Contains(err.Error(), "changed since the provenance named it") {
		t.Fatalf("changed asset: %v", err)
	}
}

func TestReleaseAssetsRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		globs   []string
		files   map[string]string
		missing bool
		want    string
	}{
		{"glob matches nothing", []string{"bin/dist/*"}, nil, true, `release.assets[0] "bin/dist/*" (none matches: build them before relay's release step`},
		{"a directory", []string{"bin/*"}, map[string]string{"bin/dist/x": "x"}, false, "is not a regular file"},
		{"a name relay takes", []string{"out/*"}, map[string]string{"out/SHA256SUMS": "x"}, false, "whose name relay's own release files take"},
		{"a bundle's name", []string{"out/*"}, map[string]string{"out/x.sigstore.json": "x"}, false, "*.sigstore.json"},
		{"two files of one name", []string{"a/*", "b/*"}, map[string]string{"a/tool": "1", "b/tool": "2"}, false, "have the same name tool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, _, out := pipelineEnv(t)
			withAssets(t, env, tc.globs, tc.files)
			st := checkedOut(t, "cid-refused")
			err := (&Executor{Env: env, StatePath: filepath.Join(env.StateDir, "state.json")}).Run(context.Background(), All(), st)
			var mi *MissingInputError
			var pi interface{ PermanentInput() bool }
			if tc.missing && !errors.As(err, &mi) || !tc.missing && !errors.As(err, &pi) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v", err)
			}
			if _, err := os.Stat(filepath.Join(out, "release.json")); !os.IsNotExist(err) {
				t.Fatal("released anyway")
			}
		})
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
