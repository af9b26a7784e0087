package wire

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/logging"
)

// TestKeySignaturesKeepPrivateRepositoriesOutOfThePublicLog: keyless signing's rule holds
// for key signatures bound for the public Rekor too, when the job's identity token says
// the repository is private; allow_public_log lifts it, and without a token nothing can
// be told.
func TestKeySignaturesKeepPrivateRepositoriesOutOfThePublicLog(t *testing.T) {
	tok := func(visibility string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"repo:acme/app","repository":"acme/app","repository_visibility":"`+visibility+`"}`)) + ".c2ln"
	}
	cfg, err := config.Parse("relay.yaml", t.TempDir(), []byte(`version: 1
source: {repo: ., ref: v0.1.0}
builder: {kind: local, registry: registry.example.com/build}
images:
  - name: hello
    local: {go: {main: .}}
    targets: [ghcr.io/acme/hello]
`+"signing: {mode: key, key: k.pem}\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts := func(env map[string]string) Options {
		return Options{Config: "relay.yaml", Getenv: func(k string) string { return env[k] }, Redactor: logging.NewRedactor(), Logger: logging.Discard()}
	}
	ctx := context.Background()
	err = keyPrivateRepository(ctx, cfg, opts(map[string]string{"SIGSTORE_ID_TOKEN": tok("private")}), logging.Discard())
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "acme/app is private") || !strings.Contains(err.Error(), "signing.allow_public_log") {
		t.Fatalf("private repository: %v", err)
	}
	for _, env := range []map[string]string{{"SIGSTORE_ID_TOKEN": tok("public")}, {}} {
		if err := keyPrivateRepository(ctx, cfg, opts(env), logging.Discard()); err != nil {
			t.Errorf("%v: %v", env, err)
		}
	}
}
