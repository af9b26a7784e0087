package steps

import (
	"reflect"
	"strings"
	"testing"

	"github.com/relaydev/relay/pkg/config"
)

// TestBuildImageCarriesEverySetting: the builders see every field of relay.yaml's local and
// docker settings; a field added to the config but not to pkg/build fails here.
func TestBuildImageCarriesEverySetting(t *testing.T) {
	im := config.Image{
		Name: "app", Context: "svc", Platforms: []string{"linux/amd64", "linux/arm64"},
		Targets: []string{"ghcr.io/acme/app"}, Tags: []string{"v1"},
		Local: &config.LocalBuild{
			Base: "oci-layout:base", Go: &config.GoBuild{Main: "./cmd/app", Binary: "/app", Ldflags: []string{"-X a=b"}, Flags: []string{"-tags=x"}},
			Files:      []config.File{{Src: "static", Dst: "/srv", Mode: "0644", Platforms: []string{"linux/arm64"}}},
			Entrypoint: []string{"/app"}, Cmd: []string{"serve"}, Env: []string{"A=1"}, User: "65532", Workdir: "/srv",
			Labels: map[string]string{"a": "b"}, Ports: []string{"8080"},
		},
		Docker: &config.DockerBuild{Dockerfile: "Dockerfile.app", BuildArgs: map[string]string{"X": "1"}, Target: "run"},
	}
	got, err := buildImage(im, config.NewTagData("v1.2.3", "0123456789abcdef0123456789abcdef01234567"))
	if err != nil {
		t.Fatal(err)
	}
	// Fields that are not the builders' business: where the image goes and how it is tagged.
	sameFields(t, "image", reflect.ValueOf(im), reflect.ValueOf(got), map[string]bool{"Context": true, "Targets": true, "Tags": true})
}

// Build arguments are templates with the tags' fields: a cloud build can stamp the version.
func TestBuildArgsTemplates(t *testing.T) {
	im := config.Image{Name: "app", Docker: &config.DockerBuild{BuildArgs: map[string]string{
		"VERSION": "{{ .Version }}", "REVISION": "{{ .ShortCommit }}", "PLAIN": "1.2", "BRACES": "{not a template}"}}}
	got, err := buildImage(im, config.NewTagData("v1.2.3", "0123456789abcdef0123456789abcdef01234567"))
	want := map[string]string{"VERSION": "v1.2.3", "REVISION": "0123456789ab", "PLAIN": "1.2", "BRACES": "{not a template}"}
	if err != nil || !reflect.DeepEqual(got.Docker.BuildArgs, want) {
		t.Fatalf("%v %v", got.Docker.BuildArgs, err)
	}
	// A branch release has no tag: {{ .Version }} is the short commit.
	got, _ = buildImage(im, config.NewTagData("", "0123456789abcdef0123456789abcdef01234567"))
	if got.Docker.BuildArgs["VERSION"] != "0123456789ab" {
		t.Fatalf("branch release: %v", got.Docker.BuildArgs)
	}
	im.Docker.BuildArgs = map[string]string{"VERSION": "{{ .Verison }}"}
	if _, err := buildImage(im, config.TagData{}); err == nil || !strings.Contains(err.Error(), "build argument VERSION") {
		t.Fatalf("a typo: %v", err)
	}
	// Linker flags render the same way: relay --version of relay's own image names its release.
	local := config.Image{Name: "relay", Local: &config.LocalBuild{Go: &config.GoBuild{Main: "./cmd/relay", Ldflags: []string{"-X main.version={{ .Version }}", "-X main.plain=1"}}}}
	got, err = buildImage(local, config.NewTagData("v1.2.3", "0123456789abcdef0123456789abcdef01234567"))
	if err != nil || strings.Join(got.Local.Go.Ldflags, " ") != "-X main.version=v1.2.3 -X main.plain=1" {
		t.Fatalf("ldflags %v %v", got.Local.Go.Ldflags, err)
	}
}

// sameFields checks that every field of cfg (set, so the test is not vacuous) has a field of
// the same name in b holding the same value.
func sameFields(t *testing.T, at string, cfg, b reflect.Value, skip map[string]bool) {
	t.Helper()
	for cfg.Kind() == reflect.Pointer {
		if cfg.IsNil() {
			t.Fatalf("%s: the test leaves it unset", at)
		}
		if b.IsNil() {
			t.Fatalf("%s: not carried to pkg/build", at)
		}
		cfg, b = cfg.Elem(), b.Elem()
	}
	switch cfg.Kind() {
	case reflect.Struct:
		for i := 0; i < cfg.NumField(); i++ {
			name := cfg.Type().Field(i).Name
			if skip[name] {
				continue
			}
			f := b.FieldByName(name)
			if !f.IsValid() {
				t.Errorf("%s.%s: pkg/build has no such field", at, name)
				continue
			}
			sameFields(t, at+"."+name, cfg.Field(i), f, nil)
		}
	case reflect.Slice:
		if cfg.Len() == 0 || cfg.Len() != b.Len() {
			t.Errorf("%s: %d entries in the config, %d carried", at, cfg.Len(), b.Len())
			return
		}
		for i := 0; i < cfg.Len(); i++ {
			sameFields(t, at, cfg.Index(i), b.Index(i), nil)
		}
	default:
		if cfg.IsZero() {
			t.Errorf("%s: the test leaves it unset", at)
		}
		if !reflect.DeepEqual(cfg.Interface(), b.Interface()) {
			t.Errorf("%s: %v in the config, %v carried", at, cfg.Interface(), b.Interface())
		}
	}
}
