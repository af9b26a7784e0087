// Package sbom generates SPDX and CycloneDX SBOMs of an image in a registry with syft as a
// library. It is the only package that links syft, so few test binaries pay for it.
package sbom

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	async "github.com/anchore/go-sync"
	"github.com/anchore/stereoscope/pkg/file"
	"github.com/anchore/stereoscope/pkg/image"
	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
	"github.com/anchore/syft/syft/format/cyclonedxjson"
	"github.com/anchore/syft/syft/format/spdxjson"
	"github.com/anchore/syft/syft/sbom"
	"github.com/anchore/syft/syft/source"
	"github.com/anchore/syft/syft/source/stereoscopesource"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	_ "modernc.org/sqlite" // RPM database cataloging needs a pure-Go sqlite driver

	"github.com/relaydev/relay/pkg/oci"
)

// Formats relay produces, with the versions it pins.
const (
	FormatSPDX       = "spdx-json"      // SPDX 2.3
	FormatCycloneDX  = "cyclonedx-json" // CycloneDX 1.6
	SPDXVersion      = "2.3"
	CycloneDXVersion = "1.6"

	DefaultBudget = 8 << 20  // per attested predicate
	HardCap       = 16 << 20 // no config can raise the budget past this
)

// Options configure a Generator.
type Options struct {
	Logger  *slog.Logger
	Formats []string
	Budget  int64 // maximum bytes of one SBOM document; 0 means DefaultBudget
	// Catalogers change syft's selection for images: "-NAME|TAG", "+NAME", "TAG".
	Catalogers []string
	Tool       string
	Version    string
	// InsecureHosts may serve plain HTTP or unverified TLS (relay.yaml's insecure
	// registries): syft reads the image through its own client, so it is told too.
	InsecureHosts []string
	// Image, when set, is how the image is read: relay's registry client, so syft's reads
	// take relay's HTTP chain (retries, User-Agent, a dry run's overlay) instead of its own.
	Image func(ctx context.Context, ref name.Digest) (v1.Image, error)
}

// Generator produces SBOM documents. It builds syft's license scanner once per process.
type Generator struct {
	o Options

	mu sync.Mutex
	// values carries syft's license scanner, built once per process (2-3 s of CPU each
	// time otherwise); it is only ever consulted for Value lookups, never for cancellation.
	values context.Context
}

// valuesCtx is ctx for deadlines and cancellation, with fallback values from another context.
type valuesCtx struct {
	context.Context
	values context.Context
}

func (c valuesCtx) Value(k any) any {
	if v := c.Context.Value(k); v != nil {
		return v
	}
	return c.values.Value(k)
}

func (g *Generator) withScanner(ctx context.Context) (context.Context, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.values == nil {
		v, err := syft.SetContextLicenseScanner(context.WithoutCancel(ctx), cataloging.DefaultLicenseConfig())
		if err != nil {
			return nil, err
		}
		g.values = v
	}
	return valuesCtx{Context: ctx, values: g.values}, nil
}

// TooLargeError says an SBOM is over budget.
type TooLargeError struct {
	Format string
	Size   int64
	Budget int64
}

func (e *TooLargeError) Error() string {
	// What makes an SBOM large is what syft's catalogers find: every file, package and
	// relationship of the image.
	if e.Budget >= HardCap {
		return fmt.Sprintf("%s SBOM is %d bytes, over %d bytes, GitHub's attestation cap and relay's limit: syft's catalogers found more in this image than one SBOM can hold; split the image, or leave out this format (sbom.formats)", e.Format, e.Size, HardCap)
	}
	return fmt.Sprintf("%s SBOM is %d bytes, over the %d-byte budget (what syft's catalogers found in the image): raise sbom.budget in relay.yaml (e.g. `budget: 16MiB`, the most: GitHub's attestation cap), or leave out this format (sbom.formats)", e.Format, e.Size, e.Budget)
}

// SelectionError is an sbom.catalogers selection syft has no cataloger for.
type SelectionError struct {
	Catalogers []string
	Err        error
}

func (e *SelectionError) Error() string {
	return fmt.Sprintf("sbom.catalogers %q: %v: name syft's catalogers or tags (e.g. -file, +sbom-cataloger, go; docs/config.md)", e.Catalogers, e.Err)
}

func (e *SelectionError) Unwrap() error { return e.Err }

// PermanentInput: the configuration is wrong, a retry fails the same way.
func (e *SelectionError) PermanentInput() bool { return true }

// New validates the options.
func New(o Options) (*Generator, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(o.Formats) == 0 {
		o.Formats = []string{FormatSPDX, FormatCycloneDX}
	}
	for _, f := range o.Formats {
		if f != FormatSPDX && f != FormatCycloneDX {
			return nil, fmt.Errorf("sbom: unknown format %q: use %s or %s", f, FormatSPDX, FormatCycloneDX)
		}
	}
	if o.Budget == 0 {
		o.Budget = DefaultBudget
	}
	if o.Budget < 0 || o.Budget > HardCap {
		return nil, fmt.Errorf("sbom: budget %d is outside 1..%d bytes", o.Budget, HardCap)
	}
	if o.Tool == "" {
		o.Tool = "relay"
	}
	return &Generator{o: o}, nil
}

// Generate catalogs the image at ref (repository@digest of one platform manifest) straight
// from its registry and returns one document per configured format.
func (g *Generator) Generate(ctx context.Context, ref name.Digest) (map[string][]byte, error) {
	start := time.Now()
	ctx, err := g.withScanner(ctx)
	if err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	src, err := g.source(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	cfg := syft.DefaultCreateSBOMConfig().WithTool(g.o.Tool, g.o.Version)
	if len(g.o.Catalogers) > 0 {
		cfg = cfg.WithCatalogerSelection(cataloging.NewSelectionRequest().WithExpression(g.o.Catalogers...))
	}
	s, err := syft.CreateSBOM(ctx, src, cfg)
	if err != nil && strings.Contains(err.Error(), "no cataloger tasks respond") {
		return nil, &SelectionError{Catalogers: g.o.Catalogers, Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("cataloging %s: %w", ref, err)
	}
	out := map[string][]byte{}
	for _, f := range g.o.Formats {
		doc, err := encode(f, *s)
		if err != nil {
			return nil, fmt.Errorf("encoding %s SBOM of %s: %w", f, ref, err)
		}
		if doc, err = creators(f, doc, g.o.Tool, g.o.Version); err != nil {
			return nil, fmt.Errorf("encoding %s SBOM of %s: %w", f, ref, err)
		}
		if int64(len(doc)) > g.o.Budget {
			return nil, &TooLargeError{Format: f, Size: int64(len(doc)), Budget: g.o.Budget}
		}
		out[f] = doc
	}
	g.o.Logger.Debug("sbom generated", "image", ref.String(), "packages", s.Artifacts.Packages.PackageCount(), "duration_ms", time.Since(start).Milliseconds())
	return out, nil
}

// source is the image as syft reads it: through Options.Image, else syft's own registry
// client.
func (g *Generator) source(ctx context.Context, ref name.Digest) (source.Source, error) {
	if g.o.Image != nil {
		img, err := g.o.Image(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("reading %s for the SBOM: %w", ref, err)
		}
		return stereoscopeSource(ctx, img, ref)
	}
	reg := &image.RegistryOptions{}
	if host, _, err := net.SplitHostPort(ref.RegistryStr()); err == nil && oci.IsLoopback(host) || oci.IsLoopback(ref.RegistryStr()) {
		reg.InsecureUseHTTP = true
	}
	for _, h := range g.o.InsecureHosts {
		if strings.EqualFold(h, ref.RegistryStr()) {
			reg.InsecureUseHTTP, reg.InsecureSkipTLSVerify = true, true
		}
	}
	src, err := syft.GetSource(ctx, ref.String(), syft.DefaultGetSourceConfig().WithSources("registry").WithRegistryOptions(reg))
	if err != nil {
		return nil, fmt.Errorf("reading %s for the SBOM: %w", ref, err)
	}
	return src, nil
}

// stereoscopeSource is what syft's registry provider makes of an image, from one relay read.
func stereoscopeSource(ctx context.Context, img v1.Image, ref name.Digest) (source.Source, error) {
	tmp := file.NewTempDirGenerator("relay-sbom")
	dir, err := tmp.NewDirectory("oci-registry-image")
	if err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	meta := []image.AdditionalMetadata{image.WithRepoDigests(ref.Context().String() + "@" + ref.DigestStr())}
	if raw, err := img.RawManifest(); err == nil {
		meta = append(meta, image.WithManifest(raw))
	}
	if cf, err := img.ConfigFile(); err == nil {
		meta = append(meta, image.WithArchitecture(cf.Architecture, cf.Variant), image.WithOS(cf.OS))
	}
	// Layers one at a time, as syft's registry provider fetches them.
	if !async.HasContextExecutor(ctx, image.LayerFetchExecutor) {
		ctx = async.SetContextExecutor(ctx, image.LayerFetchExecutor, async.NewExecutor(1))
	}
	si := image.New(img, tmp, dir, meta...)
	if err := si.Read(image.WithLazyLayerSquashes(ctx)); err != nil {
		return nil, errors.Join(fmt.Errorf("reading %s for the SBOM: %w", ref, err), si.Cleanup(), tmp.Cleanup())
	}
	return &cleanedSource{Source: stereoscopesource.New(si, stereoscopesource.ImageConfig{Reference: ref.String()}), tmp: tmp}, nil
}

// cleanedSource removes the layer files when syft is done with them.
type cleanedSource struct {
	source.Source
	tmp *file.TempDirGenerator
}

func (c *cleanedSource) Close() error { return errors.Join(c.Source.Close(), c.tmp.Cleanup()) }

// syftModuleVersion is go.mod's syft (a test keeps them equal): test binaries, which
// the e2e tier runs as relay, carry no module versions in their build info.
const syftModuleVersion = "v1.57.0"

// syftVersion is the version of syft linked into this binary; read on first use, not at
// start-up, which every command pays.
var syftVersion = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/anchore/syft" {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	return syftModuleVersion
})

// creators names who made the document: relay, which ran syft as a library, and syft,
// each with its version. syft credits its vendor as the creating organisation ("Anchore,
// Inc") and as the author of the tool it is told it is: neither is true of relay's SBOMs.
func creators(format string, doc []byte, tool, version string) ([]byte, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	switch format {
	case FormatSPDX:
		ci, _ := m["creationInfo"].(map[string]any)
		if ci == nil {
			return nil, errors.New("SPDX document without creationInfo")
		}
		ci["creators"] = []string{"Tool: " + tool + "-" + version, "Tool: syft-" + syftVersion()}
	case FormatCycloneDX:
		md, _ := m["metadata"].(map[string]any)
		if md == nil {
			return nil, errors.New("CycloneDX document without metadata")
		}
		md["tools"] = map[string]any{"components": []map[string]any{
			{"type": "application", "name": tool, "version": version},
			{"type": "application", "author": "anchore", "name": "syft", "version": syftVersion()},
		}}
	}
	return json.Marshal(m)
}

func encode(format string, s sbom.SBOM) ([]byte, error) {
	var enc sbom.FormatEncoder
	var err error
	switch format {
	case FormatSPDX:
		c := spdxjson.DefaultEncoderConfig()
		c.Version = SPDXVersion
		enc, err = spdxjson.NewFormatEncoderWithConfig(c)
	case FormatCycloneDX:
		c := cyclonedxjson.DefaultEncoderConfig()
		c.Version = CycloneDXVersion
		enc, err = cyclonedxjson.NewFormatEncoderWithConfig(c)
	default:
		return nil, errors.New("unknown format " + format)
	}
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := enc.Encode(&buf, s); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(buf.Bytes()), nil
}
