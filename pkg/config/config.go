// Package config is the relay.yaml model: strict decoding, defaults and validation.
//
// The config is intent only: it is read once, validated, and never written back.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"gopkg.in/yaml.v3"
)

// SchemaVersion is the only relay.yaml schema this build understands.
const SchemaVersion = 1

// Config is the root of relay.yaml.
type Config struct {
	Version    int        `yaml:"version" json:"version"`
	Source     Source     `yaml:"source" json:"source"`
	Builder    Builder    `yaml:"builder" json:"builder"`
	Images     []Image    `yaml:"images" json:"images"`
	Signing    Signing    `yaml:"signing" json:"signing"`
	SBOM       SBOM       `yaml:"sbom" json:"sbom"`
	Provenance Provenance `yaml:"provenance" json:"provenance"`
	Release    Release    `yaml:"release" json:"release"`
	Registries []Registry `yaml:"registries,omitempty" json:"registries,omitempty"`

	// Dir is the directory relative paths resolve against (the config file's directory);
	// File is the path the config was read from, for errors found after loading.
	Dir  string `yaml:"-" json:"-"`
	File string `yaml:"-" json:"-"`
	// Digest is the sha256 of the config file's bytes; it identifies the inputs of a run.
	Digest string `yaml:"-" json:"-"`
	// FilledFrom names where source settings relay.yaml leaves out came from (Fallback.From).
	FilledFrom string `yaml:"-" json:"-"`
}

// Source names the repository and the ref to release.
type Source struct {
	// Repo is a git URL or a local path. A local path that is not a git repository is
	// snapshotted into one by `relay run --local` (see docs/config.md).
	Repo string `yaml:"repo" json:"repo"`
	// Ref is a tag, branch or full commit id.
	Ref string `yaml:"ref" json:"ref"`
	// Depth of the clone; 0 means 1 (shallow).
	Depth int `yaml:"depth,omitempty" json:"depth,omitempty"`
	// TokenEnv names the environment variable holding the clone token (never the token itself).
	TokenEnv string `yaml:"token_env,omitempty" json:"token_env,omitempty"`
	// URL is the page a consumer opens for the source, recorded in the provenance and the
	// org.opencontainers.image.source label; default: repo when it is a remote URL, else the
	// repository of the GitHub Actions run, else the local repository's origin remote.
	URL string `yaml:"url,omitempty" json:"url,omitempty"`
}

// Fallback is what the environment supplies for the source when relay.yaml leaves it out:
// inside GitHub Actions, the workflow's repository and the pushed ref (docs/github-actions.md).
type Fallback struct {
	Repo     string // clone URL when source.repo is missing
	URL      string // source.url when source.repo is missing or a local path
	Ref      string // source.ref when it is missing
	TokenEnv string // source.token_env when source.repo came from here
	From     string // where these came from, for logs and errors, e.g. "GITHUB_REF"
}

// Builder chooses how images are built and where the builder pushes them.
type Builder struct {
	Kind string `yaml:"kind" json:"kind"`
	// Registry is the repository prefix the builder pushes to, e.g. myacr.azurecr.io/build.
	Registry string `yaml:"registry" json:"registry"`
	// ACR configures builder.kind acr (ACR Tasks).
	ACR *ACRBuilder `yaml:"acr,omitempty" json:"acr,omitempty"`
	// GCB configures builder.kind gcb (Google Cloud Build).
	GCB *GCBBuilder `yaml:"gcb,omitempty" json:"gcb,omitempty"`
	// CodeBuild configures builder.kind codebuild (AWS CodeBuild).
	CodeBuild *CodeBuildBuilder `yaml:"codebuild,omitempty" json:"codebuild,omitempty"`
}

// CodeBuildBuilder is the CodeBuild project that builds the images and the bucket that
// takes the context; relay authenticates with the AWS default chain.
type CodeBuildBuilder struct {
	Project string   `yaml:"project" json:"project"`
	Bucket  string   `yaml:"bucket" json:"bucket"`
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"` // default 2h
}

// GCBBuilder is the project whose Cloud Build builds the images and the bucket that takes
// the context; relay authenticates with application default credentials.
type GCBBuilder struct {
	Project  string   `yaml:"project" json:"project"`
	Location string   `yaml:"location,omitempty" json:"location,omitempty"` // default global
	Bucket   string   `yaml:"bucket" json:"bucket"`
	Timeout  Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"` // default 2h
	// Endpoints replace the googleapis.com ones (Private Service Connect).
	Endpoints *GCBEndpoints `yaml:"endpoints,omitempty" json:"endpoints,omitempty"`
}

// GCBEndpoints are API roots, e.g. https://cloudbuild-myendpoint.p.googleapis.com.
type GCBEndpoints struct {
	CloudBuild      string `yaml:"cloudbuild,omitempty" json:"cloudbuild,omitempty"`
	Storage         string `yaml:"storage,omitempty" json:"storage,omitempty"`
	Logging         string `yaml:"logging,omitempty" json:"logging,omitempty"`
	ResourceManager string `yaml:"resourcemanager,omitempty" json:"resourcemanager,omitempty"`
}

// ACRBuilder is the registry whose ACR Tasks build the images; relay authenticates with
// the workload's Azure identity (workload identity, managed identity), never a secret.
type ACRBuilder struct {
	Subscription  string `yaml:"subscription" json:"subscription"`
	ResourceGroup string `yaml:"resource_group" json:"resource_group"`
	Registry      string `yaml:"registry" json:"registry"` // the registry's resource name
	// ARMEndpoint is Azure Resource Manager's root (default https://management.azure.com;
	// sovereign clouds have their own).
	ARMEndpoint string `yaml:"arm_endpoint,omitempty" json:"arm_endpoint,omitempty"`
	// Timeout of each run, a Go duration (default 2h; ACR's own default is 1h).
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// DockerBuild is how a cloud builder builds an image: from a Dockerfile in its context.
type DockerBuild struct {
	Dockerfile string `yaml:"dockerfile,omitempty" json:"dockerfile,omitempty"` // relative to the context (default Dockerfile)
	// BuildArgs' values may be templates with the tag templates' fields ({{ .Version }}).
	BuildArgs map[string]string `yaml:"build_args,omitempty" json:"build_args,omitempty"`
	Target    string            `yaml:"target,omitempty" json:"target,omitempty"`
}

// Image is one image to build and publish.
type Image struct {
	Name      string   `yaml:"name" json:"name"`
	Context   string   `yaml:"context,omitempty" json:"context,omitempty"`
	Platforms []string `yaml:"platforms,omitempty" json:"platforms,omitempty"`
	// Local holds the settings of the Docker-free local builder.
	Local *LocalBuild `yaml:"local,omitempty" json:"local,omitempty"`
	// Docker holds the Dockerfile settings of the cloud builders.
	Docker  *DockerBuild `yaml:"docker,omitempty" json:"docker,omitempty"`
	Targets []string     `yaml:"targets" json:"targets"`
	Tags    []string     `yaml:"tags,omitempty" json:"tags,omitempty"`
}

// LocalBuild describes an image the local builder assembles without a daemon.
type LocalBuild struct {
	// Base is "scratch", "oci-layout:PATH[@sha256:...]" (relative to the config file), or
	// a registry image REGISTRY/REPO[:TAG]@sha256:… (a tag alone is resolved each build).
	Base       string            `yaml:"base,omitempty" json:"base,omitempty"`
	Go         *GoBuild          `yaml:"go,omitempty" json:"go,omitempty"`
	Files      []File            `yaml:"files,omitempty" json:"files,omitempty"`
	Entrypoint []string          `yaml:"entrypoint,omitempty" json:"entrypoint,omitempty"`
	Cmd        []string          `yaml:"cmd,omitempty" json:"cmd,omitempty"`
	Env        []string          `yaml:"env,omitempty" json:"env,omitempty"`
	User       string            `yaml:"user,omitempty" json:"user,omitempty"`
	Workdir    string            `yaml:"workdir,omitempty" json:"workdir,omitempty"`
	Labels     map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	Ports      []string          `yaml:"ports,omitempty" json:"ports,omitempty"`
}

// GoBuild builds a Go main package per platform, ko-style.
type GoBuild struct {
	// Main is the package to build, relative to the image context.
	Main string `yaml:"main" json:"main"`
	// Binary is the path of the binary in the image; default /<name>.
	Binary  string   `yaml:"binary,omitempty" json:"binary,omitempty"`
	Ldflags []string `yaml:"ldflags,omitempty" json:"ldflags,omitempty"`
	Flags   []string `yaml:"flags,omitempty" json:"flags,omitempty"`
}

// File copies a file or directory of the checkout into the image.
type File struct {
	// Src is relative to the image context; it may name the platform, as in
	// dist/relay_{{ .Os }}_{{ .Arch }} (also {{ .Variant }}).
	Src  string `yaml:"src" json:"src"`
	Dst  string `yaml:"dst" json:"dst"`
	Mode string `yaml:"mode,omitempty" json:"mode,omitempty"`
	// Platforms limits the file to some of the image's platforms.
	Platforms []string `yaml:"platforms,omitempty" json:"platforms,omitempty"`
}

// Signing chooses the signer.
type Signing struct {
	// Mode is keyless, key or ephemeral. --local always uses ephemeral.
	Mode string `yaml:"mode" json:"mode"`
	// Key is a cosign key file or KMS URI when Mode is key.
	Key string `yaml:"key,omitempty" json:"key,omitempty"`
	// TrustedRoot and SigningConfig name a private Sigstore instance (trusted_root.json,
	// signing_config.json); both empty means the public-good instance through its TUF root.
	TrustedRoot   string `yaml:"trusted_root,omitempty" json:"trusted_root,omitempty"`
	SigningConfig string `yaml:"signing_config,omitempty" json:"signing_config,omitempty"`
	// TokenFile is an OIDC token file re-read before each use (projected Kubernetes tokens).
	TokenFile string `yaml:"token_file,omitempty" json:"token_file,omitempty"`
	// RetryBudget bounds the time retries of Fulcio, Rekor and the TSA may wait (default 10m).
	RetryBudget Duration `yaml:"retry_budget,omitempty" json:"retry_budget,omitempty"`
	// AllowPublicLog lets a private or internal repository write to the public Rekor, whose
	// entries reveal repository and workflow names. Off by default.
	AllowPublicLog bool `yaml:"allow_public_log,omitempty" json:"allow_public_log,omitempty"`
	// Classic also writes cosign's classic sha256-<hex>.sig signatures and .att attestations,
	// for verifiers that predate Sigstore bundles. Unset means wherever the signer can (a key,
	// or keyless with a Rekor v1 log), so cosign v2's and v3's default verify both pass.
	Classic *bool `yaml:"classic,omitempty" json:"classic,omitempty"`
	// TLog logs key signatures in the signing config's Rekor (public-good unless
	// trusted_root/signing_config name a private instance), as cosign does, so consumers'
	// plain `cosign verify --key` passes. Default true; keyless signatures are always logged.
	TLog *bool `yaml:"tlog,omitempty" json:"tlog,omitempty"`
}

// KeyTLog reports whether key signatures go to a transparency log (default true).
func (s Signing) KeyTLog() bool { return s.TLog == nil || *s.TLog }

// Budget is the parsed retry budget; zero means the default.
func (s Signing) Budget() (time.Duration, error) { return s.RetryBudget.Value() }

// SBOM chooses the SBOM formats.
type SBOM struct {
	Enabled *bool    `yaml:"enabled,omitempty" json:"enabled,omitempty"`
	Formats []string `yaml:"formats,omitempty" json:"formats,omitempty"`
	// Budget is the largest SBOM document relay attaches, e.g. "12MiB" (default 8MiB, at
	// most 16MiB: GitHub's attestation cap).
	Budget string `yaml:"budget,omitempty" json:"budget,omitempty"`
	// Catalogers change which of syft's catalogers run, as syft names them: "-NAME|TAG"
	// leaves out, "+NAME" adds, "TAG" keeps only those of the image defaults with the tag.
	Catalogers []string `yaml:"catalogers,omitempty" json:"catalogers,omitempty"`
}

// SBOM size limits.
const (
	DefaultSBOMBudget = 8 << 20
	MaxSBOMBudget     = 16 << 20
)

// BudgetBytes parses sbom.budget: bytes, or a number with KiB or MiB; 0 when unset.
func (s SBOM) BudgetBytes() (int64, error) {
	if s.Budget == "" {
		return 0, nil
	}
	num, mult := s.Budget, int64(1)
	switch {
	case strings.HasSuffix(num, "MiB"):
		num, mult = strings.TrimSuffix(num, "MiB"), 1<<20
	case strings.HasSuffix(num, "KiB"):
		num, mult = strings.TrimSuffix(num, "KiB"), 1<<10
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 || n > MaxSBOMBudget/mult {
		return 0, fmt.Errorf("sbom.budget %q is not a size between 1KiB and 16MiB", s.Budget)
	}
	return n * mult, nil
}

// Provenance toggles SLSA provenance.
type Provenance struct {
	Enabled *bool `yaml:"enabled,omitempty" json:"enabled,omitempty"`
}

// Release chooses where the release is published.
type Release struct {
	Target string         `yaml:"target" json:"target"`
	GitHub *GitHubRelease `yaml:"github,omitempty" json:"github,omitempty"`
	Dir    string         `yaml:"dir,omitempty" json:"dir,omitempty"`
	// Assets are globs (relative to this file) of the project's own files to release: CLI
	// binaries, charts, archives. Each is listed in SHA256SUMS, signed as a blob with its
	// bundle NAME.sigstore.json beside it, and named as a subject of the provenance.
	Assets []string `yaml:"assets,omitempty" json:"assets,omitempty"`
}

// ReservedAssets are the names relay gives its own release files; a release.assets file
// may not take one.
var ReservedAssets = []string{"images.lock.json", "images.txt", "release.json", "SHA256SUMS", "SHA256SUMS.sigstore.json", "relay-signing.pub"}

// GitHubRelease names the repository whose release page gets the assets.
type GitHubRelease struct {
	Repository string `yaml:"repository" json:"repository"`
	BaseURL    string `yaml:"base_url,omitempty" json:"base_url,omitempty"`
	// Notes is a text/template for the release body (docs/config.md lists its fields).
	Notes string `yaml:"notes,omitempty" json:"notes,omitempty"`
	// Attestations uploads the provenance and SBOM bundles to GitHub's attestations API,
	// where `gh attestation verify` finds them (the token needs attestations: write).
	Attestations bool `yaml:"attestations,omitempty" json:"attestations,omitempty"`
}

// Registry holds per-registry settings.
type Registry struct {
	// Host is HOST[:PORT] as it appears in references.
	Host string `yaml:"host" json:"host"`
	// Insecure allows plain HTTP and unverified TLS for this host, and no other.
	Insecure bool `yaml:"insecure,omitempty" json:"insecure,omitempty"`
	// RetryBudget is the total time retries to this host may wait, e.g. "10m"; default 5m.
	RetryBudget Duration `yaml:"retry_budget,omitempty" json:"retry_budget,omitempty"`
	// Timeout is how long a request to this host may go without progress (no answer, or a
	// body that stopped moving), e.g. "5m"; default --timeout (2m).
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// IdleTimeout parses the registry's timeout (0 when unset).
func (r Registry) IdleTimeout() (time.Duration, error) { return r.Timeout.Value() }

// Budget parses the registry's retry budget (0 when unset).
func (r Registry) Budget() (time.Duration, error) { return r.RetryBudget.Value() }

// Known values.
var (
	// ImageOSes and ImageArchitectures are what an image's platform may name (Go's and the
	// OCI image spec's values).
	ImageOSes          = []string{"linux", "windows"}
	ImageArchitectures = []string{"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64"}
	BuilderKinds       = []string{"local", "acr", "gcb", "codebuild"}
	SigningModes       = []string{"keyless", "key", "ephemeral"}
	SBOMFormats        = []string{"spdx-json", "cyclonedx-json"}
	ReleaseTargets     = []string{"github", "dir"}
)

// Error is a configuration problem; the CLI maps it to exit code 2.
type Error struct {
	File string
	Line int
	Msg  string
	Fix  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Fix != "" {
		b.WriteString(" (fix: ")
		b.WriteString(e.Fix)
		b.WriteString(")")
	}
	return b.String()
}

// Load reads, strictly decodes, defaults and validates a config file.
func Load(path string) (*Config, error) { return LoadWith(path, Fallback{}) }

// LoadWith is Load with fb filling the source settings relay.yaml leaves out.
func LoadWith(path string, fb Fallback) (*Config, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return ParseWith(path, abs, data, fb)
}

// MaxConfigSize bounds relay.yaml: a real one is a few KiB.
const MaxConfigSize = 1 << 20

// readConfig reads a regular file of at most MaxConfigSize bytes. A FIFO or device is
// refused before it is opened: opening a FIFO blocks until a writer comes (and ignores
// SIGTERM meanwhile), and /dev/zero never ends.
func readConfig(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		fix := "pass --config PATH or create relay.yaml (see docs/config.md)"
		if !errors.Is(err, os.ErrNotExist) {
			fix = "check the file's permissions"
		}
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read config: %v", unwrapPathErr(err)), Fix: fix}
	}
	if !st.Mode().IsRegular() {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read config: not a regular file (%s)", st.Mode().Type()), Fix: "pass --config the path of a relay.yaml file"}
	}
	if st.Size() > MaxConfigSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("config is %d bytes, over relay's limit of %d", st.Size(), MaxConfigSize), Fix: "pass --config the path of a relay.yaml file; a real one is a few KiB"}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read config: %v", unwrapPathErr(err)), Fix: "check the file's permissions"}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read config: %v", unwrapPathErr(err)), Fix: "check the file"}
	}
	if len(data) > MaxConfigSize { // grew after the stat
		return nil, &Error{File: path, Msg: fmt.Sprintf("config is over relay's limit of %d bytes", MaxConfigSize), Fix: "pass --config the path of a relay.yaml file"}
	}
	return data, nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var yamlLine = regexp.MustCompile(`line (\d+): (.*)`)

// Parse decodes data strictly; file is used in error messages, dir resolves relative paths.
func Parse(file, dir string, data []byte) (*Config, error) {
	return ParseWith(file, dir, data, Fallback{})
}

// ParseWith is Parse with fb filling the source settings relay.yaml leaves out.
func ParseWith(file, dir string, data []byte, fb Fallback) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: file, Msg: "config is empty", Fix: "start from the annotated example in docs/config.md"}
		}
		return nil, yamlError(file, err)
	}
	var second yaml.Node
	if err := dec.Decode(&second); !errors.Is(err, io.EOF) {
		line := second.Line
		if err != nil {
			return nil, yamlError(file, err)
		}
		return nil, &Error{File: file, Line: line, Msg: "a second YAML document begins here; relay reads exactly one",
			Fix: "remove the `---` and what follows, or put it in its own file"}
	}
	c.Dir, c.File = dir, file
	sum := sha256.Sum256(data)
	c.Digest = "sha256:" + hex.EncodeToString(sum[:])
	c.applyDefaults()
	c.applyFallback(fb)
	if err := c.Validate(file, data); err != nil {
		return nil, err
	}
	return &c, nil
}

func yamlError(file string, err error) error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	e := &Error{File: file, Msg: msg}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		fmt.Sscanf(m[1], "%d", &e.Line)
		e.Msg = m[2]
	}
	if strings.Contains(e.Msg, "not found in type") {
		// "field foo not found in type config.Image" -> name the key and the section.
		f := strings.Fields(e.Msg)
		if len(f) >= 2 {
			e.Msg = fmt.Sprintf("unknown key %q", f[1])
			if i := strings.LastIndex(msg, "config."); i >= 0 {
				if section := strings.ToLower(msg[i+len("config."):]); section == "config" {
					e.Msg += " at the top level"
				} else {
					e.Msg += " in " + section
				}
			}
		}
		e.Fix = "remove it or correct its spelling; docs/config.md lists every key"
	} else if e.Fix == "" {
		e.Fix = "correct the YAML; docs/config.md has a complete example"
	}
	return e
}

// applyFallback fills what relay.yaml leaves out of source from fb. What it fills enters
// Digest, so a state made for another ref or repository is not resumed.
func (c *Config) applyFallback(fb Fallback) {
	var used []string
	if c.Source.Repo == "" && fb.Repo != "" {
		c.Source.Repo = fb.Repo
		used = append(used, "repo "+fb.Repo)
		if c.Source.TokenEnv == "" {
			c.Source.TokenEnv = fb.TokenEnv
		}
	}
	if c.Source.Ref == "" && fb.Ref != "" {
		c.Source.Ref = fb.Ref
		used = append(used, "ref "+fb.Ref)
	}
	if c.Source.URL == "" {
		c.Source.URL = BrowseURL(c.Source.Repo)
		if c.Source.URL == "" && fb.URL != "" {
			c.Source.URL = fb.URL
			used = append(used, "url "+fb.URL)
		}
	}
	if len(used) > 0 {
		c.FilledFrom = fb.From
		sum := sha256.Sum256([]byte(c.Digest + "\x00fallback " + strings.Join(used, "\x00")))
		c.Digest = "sha256:" + hex.EncodeToString(sum[:])
	}
}

func (c *Config) applyDefaults() {
	if c.Builder.Kind == "" {
		c.Builder.Kind = "local"
	}
	for i := range c.Images {
		im := &c.Images[i]
		if im.Context == "" {
			im.Context = "."
		}
		if len(im.Platforms) == 0 {
			im.Platforms = []string{"linux/amd64"}
		}
		if im.Local != nil {
			if im.Local.Base == "" {
				im.Local.Base = "scratch"
			}
			if im.Local.Go != nil && im.Local.Go.Binary == "" {
				im.Local.Go.Binary = "/" + im.Name
			}
		}
	}
	if c.Signing.Mode == "" {
		c.Signing.Mode = "keyless"
	}
	if len(c.SBOM.Formats) == 0 {
		c.SBOM.Formats = append([]string(nil), SBOMFormats...)
	}
	if c.Release.Target == "" {
		c.Release.Target = "dir"
	}
}

// SBOMEnabled reports whether SBOMs are produced (default true).
func (c *Config) SBOMEnabled() bool { return c.SBOM.Enabled == nil || *c.SBOM.Enabled }

// ProvenanceEnabled reports whether provenance is produced (default true).
func (c *Config) ProvenanceEnabled() bool {
	return c.Provenance.Enabled == nil || *c.Provenance.Enabled
}

var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ValidTag reports whether s is a tag the OCI distribution spec accepts.
func ValidTag(s string) bool { return tagPattern.MatchString(s) }

var imageName = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`)

// Validate checks values decoding cannot; data (the raw file) is used to point at lines.
func (c *Config) Validate(file string, data []byte) error {
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	v := &validator{file: file, root: &root}
	if c.Version != SchemaVersion {
		return v.errf([]string{"version"}, fmt.Sprintf("schema version %d is not supported", c.Version),
			fmt.Sprintf("set `version: %d` at the top of the file", SchemaVersion))
	}
	if err := checkDocument(file, &root); err != nil {
		return err
	}
	// In the file's order, so the first problem reported is the first a reader meets.
	for _, check := range []func(*validator) error{c.validateSource, c.validateBuilder, c.validateImages, c.validateSigning, c.validateSBOM, c.validateRelease} {
		if err := check(v); err != nil {
			return err
		}
	}
	return nil
}

// validator makes the errors of one file, each pointing at its line.
type validator struct {
	file string
	root *yaml.Node
}

func (v *validator) errf(path []string, msg, fix string) error {
	return &Error{File: v.file, Line: lineOf(v.root, path), Msg: msg, Fix: fix}
}

func (c *Config) validateSource(v *validator) error {
	switch {
	case c.Source.Repo == "":
		return v.errf([]string{"source"}, "source.repo is missing", "name the git URL or local path to release, e.g. `repo: .` (inside GitHub Actions it defaults to the workflow's repository)")
	case c.Source.Ref == "":
		return v.errf([]string{"source"}, "source.ref is missing", "name the tag, branch or commit to release, e.g. `ref: v1.2.3`, or pass --ref (RELAY_REF); inside GitHub Actions relay releases GITHUB_REF")
	case c.Source.Depth < 0:
		return v.errf([]string{"source", "depth"}, "source.depth must not be negative", "use 1 for a shallow clone")
	}
	if u := c.Source.URL; u != "" {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" || p.User != nil {
			return v.errf([]string{"source", "url"}, fmt.Sprintf("source.url %q is not an http(s) URL without credentials", u), "name the page consumers open, e.g. `url: https://github.com/acme/app`")
		}
	}
	return nil
}

// BrowseURL is the page of a remote git repository that a consumer can open: credentials
// and a trailing .git dropped, ssh and scp-like forms turned into https. It is "" for a
// local path or file:// URL, which no consumer can open.
func BrowseURL(repo string) string {
	repo = strings.TrimSuffix(strings.TrimSuffix(repo, "/"), ".git")
	switch {
	case strings.HasPrefix(repo, "https://"), strings.HasPrefix(repo, "http://"):
		u, err := url.Parse(repo)
		if err != nil || u.Host == "" {
			return ""
		}
		u.User = nil
		return u.String()
	case strings.HasPrefix(repo, "ssh://"):
		u, err := url.Parse(repo)
		if err != nil || u.Hostname() == "" {
			return ""
		}
		return "https://" + u.Hostname() + u.EscapedPath()
	case !strings.Contains(repo, "://"):
		// scp-like git@github.com:acme/app
		at, colon := strings.Index(repo, "@"), strings.Index(repo, ":")
		if at > 0 && colon > at+1 && !strings.HasPrefix(repo[colon+1:], "/") {
			return "https://" + repo[at+1:colon] + "/" + repo[colon+1:]
		}
	}
	return ""
}

// checkTimeout refuses a builder timeout that does not parse or lies outside [min, max].
func (v *validator) checkTimeout(kind string, d Duration, min, max time.Duration) error {
	if d.IsSet() && !d.within(min, max) {
		return v.errf([]string{"builder", kind, "timeout"}, fmt.Sprintf("builder.%s.timeout %q is not a duration between %s and %s", kind, d, shortDuration(min), shortDuration(max)), "e.g. `timeout: 2h`")
	}
	return nil
}

// shortDuration writes 5m0s as 5m and 8h0m0s as 8h.
func shortDuration(d time.Duration) string {
	s := d.String()
	s = strings.Replace(s, "m0s", "m", 1)
	return strings.Replace(s, "h0m", "h", 1)
}

func (c *Config) validateBuilder(v *validator) error {
	if !oneOf(c.Builder.Kind, BuilderKinds) {
		return v.errf([]string{"builder", "kind"}, fmt.Sprintf("unknown builder kind %q", c.Builder.Kind), "use one of "+strings.Join(BuilderKinds, ", "))
	}
	switch c.Builder.Kind {
	case "acr":
		a := c.Builder.ACR
		if a == nil || a.Subscription == "" || a.ResourceGroup == "" || a.Registry == "" {
			return v.errf([]string{"builder"}, "builder.kind acr needs builder.acr with subscription, resource_group and registry",
				"e.g. `acr: {subscription: 00000000-..., resource_group: build, registry: myacr}`")
		}
		if err := v.checkTimeout("acr", a.Timeout, 5*time.Minute, 8*time.Hour); err != nil {
			return err
		}
		if a.ARMEndpoint == "" && c.Builder.Registry != "" && !strings.HasPrefix(c.Builder.Registry, strings.ToLower(a.Registry)+".azurecr.") {
			return v.errf([]string{"builder", "registry"}, fmt.Sprintf("builder.registry %q is not in the ACR registry %s", c.Builder.Registry, a.Registry),
				"ACR Tasks push to their own registry: use "+strings.ToLower(a.Registry)+".azurecr.io/PATH")
		}
	case "gcb":
		g := c.Builder.GCB
		if g == nil || g.Project == "" || g.Bucket == "" {
			return v.errf([]string{"builder"}, "builder.kind gcb needs builder.gcb with project and bucket",
				"e.g. `gcb: {project: acme-build, bucket: acme-build-sources}`")
		}
		if err := v.checkTimeout("gcb", g.Timeout, time.Minute, 24*time.Hour); err != nil {
			return err
		}
	case "codebuild":
		cb := c.Builder.CodeBuild
		if cb == nil || cb.Project == "" || cb.Bucket == "" {
			return v.errf([]string{"builder"}, "builder.kind codebuild needs builder.codebuild with project and bucket",
				"e.g. `codebuild: {project: relay-images, bucket: acme-build-sources}`")
		}
		if err := v.checkTimeout("codebuild", cb.Timeout, 5*time.Minute, 36*time.Hour); err != nil {
			return err
		}
	}
	if c.Builder.Registry == "" {
		return v.errf([]string{"builder"}, "builder.registry is missing",
			"name the repository prefix the builder pushes to, e.g. `registry: myregistry.example.com/build`")
	}
	if _, err := name.NewRepository(c.Builder.Registry + "/x"); err != nil {
		return v.errf([]string{"builder", "registry"}, fmt.Sprintf("builder.registry %q is not a valid repository prefix: %v", c.Builder.Registry, err),
			"use HOST[/PATH] in lower case, without tag or digest")
	}
	return nil
}

func (c *Config) validateImages(v *validator) error {
	if len(c.Images) == 0 {
		return v.errf([]string{"images"}, "no image to build: images is empty or missing",
			"add at least one entry under `images:` with a name and targets")
	}
	seen := map[string]bool{}
	for i, im := range c.Images {
		at := func(k ...string) []string { return append([]string{"images", fmt.Sprint(i)}, k...) }
		if im.Name == "" {
			return v.errf(at(), fmt.Sprintf("images[%d] has no name", i), "add `name: NAME` (lower case letters, digits, . _ -)")
		}
		if !imageName.MatchString(im.Name) {
			return v.errf(at("name"), fmt.Sprintf("image name %q is not valid", im.Name), "use lower case letters, digits and . _ - only")
		}
		if seen[im.Name] {
			return v.errf(at("name"), fmt.Sprintf("image name %q is used twice", im.Name), "give each image a unique name")
		}
		seen[im.Name] = true
		if filepath.IsAbs(im.Context) || strings.HasPrefix(filepath.Clean(im.Context), "..") {
			return v.errf(at("context"), fmt.Sprintf("image %s: context %q leaves the checkout", im.Name, im.Context), "use a path inside the repository")
		}
		if err := c.validateImage(v, im, at); err != nil {
			return err
		}
	}
	return nil
}

// validateImage checks one image's platforms, repositories, tags and local build.
func (c *Config) validateImage(v *validator, im Image, at func(...string) []string) error {
	seenPlat := map[string]bool{}
	for j, p := range im.Platforms {
		pl, err := v1.ParsePlatform(p)
		if err != nil || !strings.Contains(p, "/") {
			return v.errf(at("platforms", fmt.Sprint(j)), fmt.Sprintf("image %s: platform %q is not valid", im.Name, p), "use OS/ARCH[/VARIANT], e.g. linux/amd64")
		}
		if !oneOf(pl.OS, ImageOSes) || !oneOf(pl.Architecture, ImageArchitectures) {
			return v.errf(at("platforms", fmt.Sprint(j)), fmt.Sprintf("image %s: platform %q is not one an image can have", im.Name, p),
				fmt.Sprintf("use an OS of %s and an architecture of %s", strings.Join(ImageOSes, ", "), strings.Join(ImageArchitectures, ", ")))
		}
		if seenPlat[pl.String()] {
			return v.errf(at("platforms", fmt.Sprint(j)), fmt.Sprintf("image %s: platform %s is listed twice", im.Name, pl), "list each platform once: it would be built, signed and attested twice")
		}
		seenPlat[pl.String()] = true
	}
	if n := len(strings.TrimPrefix(c.Builder.Registry+"/"+im.Name, registryHost(c.Builder.Registry)+"/")); n > maxRepoPath {
		return v.errf(at("name"), fmt.Sprintf("image %s: the build repository %s/%s has a %d-character path, over the registries' limit of %d", im.Name, c.Builder.Registry, im.Name, n, maxRepoPath), "shorten builder.registry's path or the image name")
	}
	if len(im.Targets) == 0 {
		return v.errf(at(), fmt.Sprintf("image %s has no targets", im.Name), "list the repositories to publish to under `targets:`, e.g. ghcr.io/OWNER/NAME")
	}
	for j, t := range im.Targets {
		_, err := name.NewRepository(t, name.StrictValidation)
		if err != nil || strings.Contains(t, "@") || strings.Contains(t[strings.LastIndex(t, "/")+1:], ":") {
			msg := fmt.Sprintf("image %s: target %q is not a valid repository", im.Name, t)
			if err != nil {
				msg += ": " + err.Error()
			}
			return v.errf(at("targets", fmt.Sprint(j)), msg, "use HOST/PATH without tag or digest, e.g. ghcr.io/owner/name; tags go under `tags:`")
		}
	}
	for j, tag := range im.Tags {
		if !ValidTag(tag) && !strings.Contains(tag, "{{") {
			return v.errf(at("tags", fmt.Sprint(j)), fmt.Sprintf("image %s: tag %q is not valid", im.Name, tag), "tags are up to 128 of [A-Za-z0-9_.-], not starting with . or -")
		}
		if err := checkTagTemplate(tag); err != nil {
			return v.errf(at("tags", fmt.Sprint(j)), fmt.Sprintf("image %s: %v", im.Name, err), "tag templates see {{ .Version }}, {{ .Tag }}, {{ .Commit }} and {{ .ShortCommit }} (docs/config.md)")
		}
	}
	if im.Docker != nil {
		for _, k := range slices.Sorted(maps.Keys(im.Docker.BuildArgs)) {
			if _, err := RenderValue("build argument "+k, im.Docker.BuildArgs[k], sampleTagData); err != nil {
				return v.errf(at("docker", "build_args", k), fmt.Sprintf("image %s: %v", im.Name, err), "build arguments see {{ .Version }}, {{ .Tag }}, {{ .Commit }} and {{ .ShortCommit }} (docs/config.md)")
			}
		}
	}
	if im.Local == nil {
		if c.Builder.Kind == "local" {
			return v.errf(at(), fmt.Sprintf("image %s has no `local:` build settings but builder.kind is local", im.Name), "add a `local:` section (see docs/config.md)")
		}
		return nil
	}
	return validateLocal(v, im, at)
}

// OverrideRef releases ref instead of source.ref for this run (relay run --ref): a tag
// push releases its tag without editing relay.yaml. Like a base override it enters Digest.
func (c *Config) OverrideRef(ref string) error {
	if strings.TrimSpace(ref) == "" || strings.ContainsAny(ref, " \t\n~^:?*[\\") {
		return fmt.Errorf("--ref %q is not a tag, branch or commit (fix: e.g. --ref v1.2.3)", ref)
	}
	c.Source.Ref = strings.TrimPrefix(strings.TrimPrefix(ref, "refs/tags/"), "refs/heads/")
	sum := sha256.Sum256([]byte(c.Digest + "\x00ref " + c.Source.Ref))
	c.Digest = "sha256:" + hex.EncodeToString(sum[:])
	return nil
}

// OverrideBase replaces image's local.base for this run (relay run --base IMAGE=REF): a
// mirror, or a test's stand-in, instead of the configured base. The override is one of
// the run's inputs, so it enters Digest: a state made on another base is not resumed.
func (c *Config) OverrideBase(image, ref string) error {
	for i := range c.Images {
		im := &c.Images[i]
		if im.Name != image {
			continue
		}
		if im.Local == nil {
			return fmt.Errorf("--base %s=%s: image %s has no local build (fix: --base applies to images built with `local:`)", image, ref, image)
		}
		if ref != "scratch" && !strings.HasPrefix(ref, "oci-layout:") {
			if msg := registryBaseProblem(ref); msg != "" {
				return fmt.Errorf("--base %s=%s: the base %s (fix: write IMAGE=REGISTRY/REPO:TAG@sha256:…, scratch or oci-layout:PATH)", image, ref, msg)
			}
		}
		im.Local.Base = ref
		sum := sha256.Sum256([]byte(c.Digest + "\x00base " + image + "=" + ref))
		c.Digest = "sha256:" + hex.EncodeToString(sum[:])
		return nil
	}
	var names []string
	for _, im := range c.Images {
		names = append(names, im.Name)
	}
	return fmt.Errorf("--base %s=%s: no image %s (fix: name one of %s)", image, ref, image, strings.Join(names, ", "))
}

// registryBaseProblem says what keeps base from being a registry image reference (the
// builder parses it fully): a registry host must be named, and a tag or a digest.
func registryBaseProblem(base string) string {
	first, rest, ok := strings.Cut(base, "/")
	if !ok || rest == "" || !(strings.ContainsAny(first, ".:") || first == "localhost") {
		return "names no registry host"
	}
	repo, dg, pinned := strings.Cut(base, "@")
	if pinned && !strings.HasPrefix(dg, "sha256:") {
		return "has a digest that is not sha256:…"
	}
	if !pinned && !strings.Contains(repo[strings.LastIndex(repo, "/")+1:], ":") {
		return "has neither a tag nor a digest"
	}
	return ""
}

// validateLocal checks an image's local build: base, labels and files.
func validateLocal(v *validator, im Image, at func(...string) []string) error {
	lb := im.Local
	if lb.Base != "scratch" && !strings.HasPrefix(lb.Base, "oci-layout:") {
		if msg := registryBaseProblem(lb.Base); msg != "" {
			return v.errf(at("local", "base"), fmt.Sprintf("image %s: base %q %s", im.Name, lb.Base, msg), "use `scratch`, `oci-layout:PATH` or REGISTRY/REPO:TAG@sha256:… (e.g. ghcr.io/actions/actions-runner:2.330.0@sha256:…)")
		}
	}
	if err := checkLabels(lb.Labels); err != nil {
		return v.errf(at("local", "labels"), fmt.Sprintf("image %s: %v", im.Name, err), "keep labels short: they go into every image's config, which registries and runtimes read whole")
	}
	if lb.Go == nil && len(lb.Files) == 0 {
		return v.errf(at("local"), fmt.Sprintf("image %s: the local build has nothing to add", im.Name), "add `go: {main: ./cmd/NAME}` or `files:`")
	}
	if lb.Go != nil {
		for j, f := range lb.Go.Ldflags {
			if _, err := RenderValue("ldflags", f, sampleTagData); err != nil {
				return v.errf(at("local", "go", "ldflags", fmt.Sprint(j)), fmt.Sprintf("image %s: %v", im.Name, err), "ldflags see {{ .Version }}, {{ .Tag }}, {{ .Commit }} and {{ .ShortCommit }}, e.g. -X main.version={{ .Version }}")
			}
		}
	}
	for j, f := range lb.Files {
		if f.Src == "" || f.Dst == "" || !strings.HasPrefix(f.Dst, "/") {
			return v.errf(at("local", "files", fmt.Sprint(j)), fmt.Sprintf("image %s: files[%d] needs src and an absolute dst", im.Name, j), "e.g. `{src: static, dst: /srv/static}`")
		}
		if f.Mode != "" {
			var m uint32
			if _, err := fmt.Sscanf(f.Mode, "%o", &m); err != nil || m > 0o7777 {
				return v.errf(at("local", "files", fmt.Sprint(j), "mode"), fmt.Sprintf("image %s: mode %q is not an octal file mode", im.Name, f.Mode), "quote it, e.g. mode: \"0755\"")
			}
		}
		if strings.Contains(f.Src, "{{") {
			tm, err := template.New("src").Option("missingkey=error").Parse(f.Src)
			if err == nil {
				err = tm.Execute(io.Discard, struct{ Os, Arch, Variant string }{"linux", "amd64", ""})
			}
			if err != nil {
				return v.errf(at("local", "files", fmt.Sprint(j), "src"), fmt.Sprintf("image %s: files[%d].src %q: %v", im.Name, j, f.Src, err), "use {{ .Os }}, {{ .Arch }} or {{ .Variant }}")
			}
		}
		for _, p := range f.Platforms {
			if !slices.Contains(im.Platforms, p) {
				return v.errf(at("local", "files", fmt.Sprint(j), "platforms"), fmt.Sprintf("image %s: files[%d] names platform %s, which the image does not build", im.Name, j, p), "list platforms of images[].platforms ("+strings.Join(im.Platforms, ", ")+")")
			}
		}
	}
	return nil
}

func (c *Config) validateSigning(v *validator) error {
	switch {
	case !oneOf(c.Signing.Mode, SigningModes):
		return v.errf([]string{"signing", "mode"}, fmt.Sprintf("unknown signing mode %q", c.Signing.Mode), "use one of "+strings.Join(SigningModes, ", "))
	case c.Signing.Mode == "key" && c.Signing.Key == "":
		return v.errf([]string{"signing"}, "signing.mode is key but signing.key is empty", "name a cosign key file or KMS URI")
	case (c.Signing.TrustedRoot == "") != (c.Signing.SigningConfig == ""):
		return v.errf([]string{"signing"}, "a private Sigstore instance needs both signing.trusted_root and signing.signing_config", "name both files (cosign trusted-root create / signing-config create make them), or neither for the public-good instance")
	case !c.Signing.RetryBudget.within(0, 24*time.Hour):
		return v.errf([]string{"signing", "retry_budget"}, fmt.Sprintf("signing.retry_budget %q is not a duration between 0 and 24h", c.Signing.RetryBudget), "use a Go duration such as 10m")
	}
	return nil
}

func (c *Config) validateSBOM(v *validator) error {
	if n, err := c.SBOM.BudgetBytes(); err != nil || (n > 0 && n < 1<<10) {
		return v.errf([]string{"sbom", "budget"}, fmt.Sprintf("sbom.budget %q is not a size between 1KiB and 16MiB", c.SBOM.Budget), "e.g. `budget: 12MiB`; 16MiB is GitHub's attestation cap")
	}
	for j, f := range c.SBOM.Formats {
		if !oneOf(f, SBOMFormats) {
			return v.errf([]string{"sbom", "formats", fmt.Sprint(j)}, fmt.Sprintf("unknown SBOM format %q", f), "use "+strings.Join(SBOMFormats, " or "))
		}
	}
	for j, e := range c.SBOM.Catalogers {
		if !catalogerExpr.MatchString(e) {
			return v.errf([]string{"sbom", "catalogers", fmt.Sprint(j)}, fmt.Sprintf("sbom.catalogers entry %q is not a cataloger selection", e),
				"one name or tag per entry as syft names them: `-file` leaves out, `+sbom-cataloger` adds, `go` keeps only that tag (docs/config.md)")
		}
	}
	return nil
}

// catalogerExpr is one of syft's selection expressions: an optional + or -, then a name or tag.
var catalogerExpr = regexp.MustCompile(`^[+-]?[a-z0-9][a-z0-9.-]*$`)

// validateRelease checks the release target, the registries' settings, then the GitHub
// release's repository.
func (c *Config) validateRelease(v *validator) error {
	if !oneOf(c.Release.Target, ReleaseTargets) {
		return v.errf([]string{"release", "target"}, fmt.Sprintf("unknown release target %q", c.Release.Target), "use one of "+strings.Join(ReleaseTargets, ", "))
	}
	seenHost := map[string]bool{}
	for i, r := range c.Registries {
		at := []string{"registries", fmt.Sprint(i)}
		if r.Host == "" || strings.ContainsAny(r.Host, "/@ ") {
			return v.errf(at, fmt.Sprintf("registries[%d].host %q is not HOST[:PORT]", i, r.Host), "e.g. `host: registry.internal:5000`")
		}
		if seenHost[r.Host] {
			return v.errf(at, fmt.Sprintf("registry %s is listed twice", r.Host), "merge the two entries")
		}
		seenHost[r.Host] = true
		if !r.RetryBudget.within(0, 24*time.Hour) {
			return v.errf(append(at, "retry_budget"), fmt.Sprintf("registry %s: retry_budget %q is not a duration between 0 and 24h", r.Host, r.RetryBudget), "use a Go duration such as 90s or 10m")
		}
		if d, err := r.Timeout.Value(); err != nil || d < 0 || (d > 0 && d < time.Second) || d > 6*time.Hour {
			return v.errf(append(at, "timeout"), fmt.Sprintf("registry %s: timeout %q is not a duration between 1s and 6h", r.Host, r.Timeout), "use a Go duration such as 2m or 10m")
		}
	}
	if c.Release.Target == "github" && (c.Release.GitHub == nil || !strings.Contains(c.Release.GitHub.Repository, "/")) {
		return v.errf([]string{"release"}, "release.target is github but release.github.repository is missing", "add `github: {repository: OWNER/NAME}`")
	}
	for i, g := range c.Release.Assets {
		at := []string{"release", "assets", fmt.Sprint(i)}
		if _, err := filepath.Match(g, ""); err != nil || strings.TrimSpace(g) == "" {
			return v.errf(at, fmt.Sprintf("release.assets[%d] %q is not a glob", i, g), "e.g. `- bin/dist/relay-*` (relative to relay.yaml)")
		}
		if strings.Contains(g, "**") {
			return v.errf(at, fmt.Sprintf("release.assets[%d] %q: ** is not supported", i, g), "name each directory, e.g. `- dist/*/app-*`")
		}
	}
	return nil
}

// ResolvePath makes a config-relative path absolute.
func (c *Config) ResolvePath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

func oneOf(s string, set []string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}

// lineOf finds the line of a key path (map keys and sequence indexes) in a YAML document;
// it returns the line of the deepest node found, so errors point near the problem.
func lineOf(root *yaml.Node, path []string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, p := range path {
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
		case yaml.SequenceNode:
			var idx int
			if _, err := fmt.Sscanf(p, "%d", &idx); err == nil && idx < len(n.Content) {
				next = n.Content[idx]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}
