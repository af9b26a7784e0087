package oci

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func TestEnvKeychain(t *testing.T) {
	env := map[string]string{"GITHUB_TOKEN": "ghs_x", "GITHUB_ACTOR": "octo", "DOCKERHUB_USERNAME": "acme", "DOCKERHUB_TOKEN": "dckr_y"}
	kc := envKeychain{func(k string) string { return env[k] }}
	tests := []struct {
		ref, user, pass string
	}{
		{"ghcr.io/acme/app", "octo", "ghs_x"},
		{"docker.io/acme/app", "acme", "dckr_y"},
		{"acme/app", "acme", "dckr_y"},
		{"quay.io/acme/app", "", ""},
	}
	for _, tt := range tests {
		r, _ := name.NewRepository(tt.ref)
		a, err := kc.Resolve(r)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := a.Authorization()
		if cfg.Username != tt.user || cfg.Password != tt.pass {
			t.Errorf("%s: got %q/%q", tt.ref, cfg.Username, cfg.Password)
		}
	}
	empty := envKeychain{func(string) string { return "" }}
	r, _ := name.NewRepository("ghcr.io/acme/app")
	if a, _ := empty.Resolve(r); a != authn.Anonymous {
		t.Error("no token should be anonymous")
	}
}
