package build

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/template"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/relaydev/relay/pkg/oci"
)

// LocalOptions configure the Docker-free local builder.
type LocalOptions struct {
	Client    *oci.Client
	Logger    *slog.Logger
	ConfigDir string // oci-layout bases resolve against it
	GoBinary  string // default "go" from PATH
	Jobs      int
	Env       []string // environment for `go build`; default os.Environ()
	// CacheDir keeps Go binaries by what they are built from (commit, toolchain, flags), so a
	// rebuild of the same commit skips `go build`; empty: no cache.
	CacheDir string
}

// Local assembles images in process: a base (scratch or an OCI layout), a layer of
// files, a layer with a Go binary built per platform (ko-style), and the config.
// Every timestamp is the commit time, so the same commit gives the same digest.
type Local struct {
	o LocalOptions

	envOnce sync.Once // the toolchain's settings, for binaryKey
	env     string
	envErr  error
}

// NewLocal validates the options.
func NewLocal(o LocalOptions) (*Local, error) {
	if o.Client == nil {
		return nil, errors.New("build: local builder needs a registry client")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.GoBinary == "" {
		o.GoBinary = "go"
	}
	if o.Jobs < 1 {
		o.Jobs = 1
	}
	if o.Env == nil {
		o.Env = os.Environ()
	}
	return &Local{o: o}, nil
}

// Name implements Builder.
func (l *Local) Name() string { return "local" }

// Build implements Builder.
func (l *Local) Build(ctx context.Context, req Request) (*Result, error) {
	spec := req.Image.Local
	if spec == nil {
		return nil, fmt.Errorf("image %s has no `local:` build settings", req.Image.Name)
	}
	if spec.Go != nil && !strings.HasPrefix(spec.Go.Binary, "/") {
		// An empty path would make a layer whose only entry is "/" as a file.
		return nil, fmt.Errorf("image %s: local.go.binary %q is not an absolute path in the image", req.Image.Name, spec.Go.Binary)
	}
	var logBuf lockedBuffer
	fmt.Fprintf(&logBuf, "relay local build of %s at %s (%s)\n", req.Image.Name, req.Source.Commit, req.Source.Tag)
	epoch := req.Source.CommitTime.UTC()
	tmp, err := os.MkdirTemp("", "relay-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	// One files layer for all platforms, unless the files differ per platform.
	var shared v1.Layer
	if !perPlatform(spec.Files) {
		if shared, err = filesLayer(req.ContextDir, spec.Files, epoch); err != nil {
			return nil, fmt.Errorf("image %s: %w", req.Image.Name, err)
		}
	}

	type built struct {
		img  v1.Image
		plat v1.Platform
		base *Base
	}
	plats := make([]v1.Platform, len(req.Image.Platforms))
	for i, ps := range req.Image.Platforms {
		plat, err := v1.ParsePlatform(ps)
		if err != nil {
			return nil, &InputError{fmt.Errorf("image %s: platform %q: %w", req.Image.Name, ps, err)}
		}
		plats[i] = *plat
	}
	// The base is resolved once, and must have every platform, before anything is built.
	rb, err := l.resolveBase(ctx, spec.Base, plats)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", req.Image.Name, err)
	}
	out := make([]built, len(req.Image.Platforms))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(l.o.Jobs)
	for i, ps := range req.Image.Platforms {
		g.Go(func() error {
			plat := &plats[i]
			// Build's ctx, not the group's: the base's layers are read lazily at push time,
			// after the group (and its context) is done.
			base, baseInfo, err := rb.image(ctx, *plat)
			if err != nil {
				return fmt.Errorf("image %s: base for %s: %w", req.Image.Name, ps, err)
			}
			var layers []v1.Layer
			files := shared
			if perPlatform(spec.Files) {
				pf, err := platformFiles(spec.Files, *plat)
				if err != nil {
					return fmt.Errorf("image %s (%s): %w", req.Image.Name, ps, err)
				}
				if files, err = filesLayer(req.ContextDir, pf, epoch); err != nil {
					return fmt.Errorf("image %s (%s): %w", req.Image.Name, ps, err)
				}
			}
			if files != nil {
				layers = append(layers, files)
			}
			if spec.Go != nil {
				bin := filepath.Join(tmp, strings.ReplaceAll(ps, "/", "-"), "bin")
				if err := l.goBuild(gctx, req, *plat, bin, &logBuf); err != nil {
					return err
				}
				gl, err := binaryLayer(bin, spec.Go.Binary, epoch)
				if err != nil {
					return err
				}
				layers = append(layers, gl)
			}
			img, err := assemble(base, layers, req, *plat, epoch, baseInfo)
			if err != nil {
				return fmt.Errorf("image %s (%s): %w", req.Image.Name, ps, err)
			}
			out[i] = built{img: img, plat: *plat, base: baseInfo}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	res := &Result{Builder: l.Name()}
	seenBase := map[string]bool{}
	for _, b := range out {
		d, err := l.o.Client.Write(ctx, req.Repository, b.img)
		if err != nil {
			return nil, err
		}
		res.Platforms = append(res.Platforms, oci.Manifest{Platform: b.plat.String(), Digest: d.DigestStr()})
		switch {
		case b.base != nil && b.base.Name != "": // a registry base: named, per platform
			res.Bases = append(res.Bases, *b.base)
		case b.base != nil && !seenBase[b.base.Digest]:
			seenBase[b.base.Digest] = true
			res.BaseImages = append(res.BaseImages, b.base.Digest)
		}
		fmt.Fprintf(&logBuf, "pushed %s as %s\n", b.plat.String(), d.DigestStr())
	}
	var top interface {
		Digest() (v1.Hash, error)
		RawManifest() ([]byte, error)
		MediaType() (types.MediaType, error)
	}
	if len(out) == 1 {
		top = out[0].img
	} else {
		adds := make([]mutate.IndexAddendum, len(out))
		for i, b := range out {
			p := b.plat
			adds[i] = mutate.IndexAddendum{Add: b.img, Descriptor: v1.Descriptor{Platform: &p}}
		}
		idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
		if _, err := l.o.Client.Write(ctx, req.Repository, idx); err != nil {
			return nil, err
		}
		top = idx
	}
	h, err := top.Digest()
	if err != nil {
		return nil, err
	}
	raw, _ := top.RawManifest()
	mt, _ := top.MediaType()
	res.Digest, res.MediaType, res.Size = h.String(), string(mt), int64(len(raw))
	res.Ref = req.Repository.Digest(h.String()).String()
	fmt.Fprintf(&logBuf, "pushed %s\n", res.Ref)
	res.Log = logBuf.Bytes()
	sum := sha256.Sum256(res.Log)
	res.RunID = fmt.Sprintf("local-%x", sum[:6])
	return res, nil
}

func (l *Local) goBuild(ctx context.Context, req Request, plat v1.Platform, out string, logw io.Writer) error {
	g := req.Image.Local.Go
	ldflags := append([]string{"-s", "-w", "-buildid="}, g.Ldflags...)
	if req.Source.Tag != "" {
		ldflags = append(ldflags, "-X", "main.version="+req.Source.Tag)
	}
	args := []string{"build", "-trimpath", "-buildvcs=auto", "-ldflags", strings.Join(ldflags, " "), "-o", out}
	args = append(args, g.Flags...)
	main := g.Main
	if !strings.HasPrefix(main, ".") && !strings.HasPrefix(main, "/") {
		main = "./" + main
	}
	args = append(args, main)
	key := l.binaryKey(ctx, req, plat, ldflags, append(append([]string{}, g.Flags...), main)) // not -o: a temporary path
	if l.cachedBinary(key, out) {
		fmt.Fprintf(logw, "# %s: the binary of %s built from commit %s before (cache %s)\n", plat.String(), main, req.Source.Commit, key[:12])
		l.o.Logger.Debug("go build cached", "platform", plat.String(), "key", key)
		return nil
	}
	cmd := exec.CommandContext(ctx, l.o.GoBinary, args...)
	// On cancellation let `go build` stop its compiler children itself, then insist.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = req.ContextDir
	env := append([]string(nil), l.o.Env...)
	env = append(env, "CGO_ENABLED=0", "GOOS="+plat.OS, "GOARCH="+plat.Architecture,
		fmt.Sprintf("SOURCE_DATE_EPOCH=%d", req.Source.CommitTime.Unix()))
	if plat.Architecture == "arm" && plat.Variant != "" {
		env = append(env, "GOARM="+strings.TrimPrefix(plat.Variant, "v"))
	}
	cmd.Env = env
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	err := cmd.Run()
	fmt.Fprintf(logw, "$ go %s  # %s\n%s", strings.Join(args, " "), plat.String(), buf.String())
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("building %s for %s: the Go toolchain (%q) is not on PATH: install Go or set local.go to nil", g.Main, plat.String(), l.o.GoBinary)
		}
		return fmt.Errorf("building %s for %s: %v: %s", g.Main, plat.String(), err, strings.TrimSpace(buf.String()))
	}
	l.o.Logger.Debug("go build", "platform", plat.String(), "duration_ms", time.Since(start).Milliseconds())
	l.keepBinary(key, out)
	return nil
}

func assemble(base v1.Image, layers []v1.Layer, req Request, plat v1.Platform, epoch time.Time, from *Base) (v1.Image, error) {
	spec := req.Image.Local
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{Layer: l, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: epoch}, CreatedBy: "relay local builder", Comment: req.Image.Name,
		}}
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Created = v1.Time{Time: epoch}
	c := &cf.Config
	if spec.Entrypoint != nil {
		c.Entrypoint = spec.Entrypoint
	} else if spec.Go != nil && len(c.Entrypoint) == 0 {
		c.Entrypoint = []string{spec.Go.Binary}
	}
	if spec.Cmd != nil {
		c.Cmd = spec.Cmd
	}
	c.Env = mergeEnv(c.Env, spec.Env)
	if len(c.Env) == 0 {
		c.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	}
	if spec.User != "" {
		c.User = spec.User
	}
	if spec.Workdir != "" {
		c.WorkingDir = spec.Workdir
	}
	if len(spec.Ports) > 0 {
		c.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.Ports {
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			c.ExposedPorts[p] = struct{}{}
		}
	}
	labels := map[string]string{}
	for k, v := range c.Labels {
		labels[k] = v
	}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	if req.Source.Repo != "" {
		labels["org.opencontainers.image.source"] = req.Source.Repo
	}
	labels["org.opencontainers.image.revision"] = req.Source.Commit
	labels["org.opencontainers.image.created"] = epoch.Format(time.RFC3339)
	if req.Source.Tag != "" {
		labels["org.opencontainers.image.version"] = req.Source.Tag
	}
	c.Labels = labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	if from != nil && from.Name != "" {
		// The OCI annotations that say what an image was built on, for scanners and rebuilders.
		img = mutate.Annotations(img, map[string]string{
			"org.opencontainers.image.base.name":   from.Name,
			"org.opencontainers.image.base.digest": from.Digest,
		}).(v1.Image)
	}
	return img, nil
}

func mergeEnv(base, add []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range add {
		k := strings.SplitN(kv, "=", 2)[0]
		replaced := false
		for i, e := range out {
			if strings.SplitN(e, "=", 2)[0] == k {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

type tarEntry struct {
	name string
	mode int64
	dir  bool
	data []byte
}

// filesLayer makes one reproducible layer of the configured files (nil when there are none).
// perPlatform says whether the files differ between platforms: a src templated on the
// platform, or a file only some platforms get.
func perPlatform(files []File) bool {
	for _, f := range files {
		if len(f.Platforms) > 0 || strings.Contains(f.Src, "{{") {
			return true
		}
	}
	return false
}

// platformFiles are the files plat gets, with their sources' templates filled in
// ({{ .Os }}, {{ .Arch }}, {{ .Variant }}).
func platformFiles(files []File, plat v1.Platform) ([]File, error) {
	var out []File
	for _, f := range files {
		if len(f.Platforms) > 0 && !slices.ContainsFunc(f.Platforms, func(s string) bool {
			p, err := v1.ParsePlatform(s)
			return err == nil && samePlatform(plat, *p)
		}) {
			continue
		}
		if strings.Contains(f.Src, "{{") {
			tm, err := template.New("src").Option("missingkey=error").Parse(f.Src)
			if err != nil {
				return nil, &InputError{fmt.Errorf("files: src %q: %w", f.Src, err)}
			}
			var b strings.Builder
			if err := tm.Execute(&b, struct{ Os, Arch, Variant string }{plat.OS, plat.Architecture, plat.Variant}); err != nil {
				return nil, &InputError{fmt.Errorf("files: src %q: %w (fix: use {{ .Os }}, {{ .Arch }} or {{ .Variant }})", f.Src, err)}
			}
			f.Src = b.String()
		}
		out = append(out, f)
	}
	return out, nil
}

func filesLayer(ctxDir string, files []File, epoch time.Time) (v1.Layer, error) {
	if len(files) == 0 {
		return nil, nil
	}
	var entries []tarEntry
	for _, f := range files {
		src := filepath.Join(ctxDir, filepath.FromSlash(f.Src))
		if rel, err := filepath.Rel(ctxDir, src); err != nil || strings.HasPrefix(rel, "..") {
			return nil, &InputError{fmt.Errorf("files: %q leaves the build context", f.Src)}
		}
		var mode int64 = -1
		if f.Mode != "" {
			var m int64
			fmt.Sscanf(f.Mode, "%o", &m)
			mode = m
		}
		info, err := os.Stat(src)
		if err != nil {
			return nil, &InputError{fmt.Errorf("files: %s: %w (fix: the path is relative to the image context in the checkout)", f.Src, err)}
		}
		dst := path.Clean(f.Dst)
		if !info.IsDir() {
			e, err := fileEntry(src, dst, info, mode)
			if err != nil {
				return nil, err
			}
			entries = append(entries, e)
			continue
		}
		err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			name := path.Join(dst, filepath.ToSlash(rel))
			info, err := d.Info()
			if err != nil {
				return err
			}
			if d.IsDir() {
				entries = append(entries, tarEntry{name: name, mode: 0o755, dir: true})
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			e, err := fileEntry(p, name, info, mode)
			entries = append(entries, e)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("files: %s: %w", f.Src, err)
		}
	}
	return tarLayer(entries, epoch)
}

func fileEntry(src, name string, info os.FileInfo, mode int64) (tarEntry, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return tarEntry{}, err
	}
	if mode < 0 {
		// Only the executable bit survives: umask and checkout differences must not change digests.
		mode = 0o644
		if info.Mode()&0o111 != 0 {
			mode = 0o755
		}
	}
	return tarEntry{name: name, mode: mode, data: b}, nil
}

func binaryLayer(bin, dst string, epoch time.Time) (v1.Layer, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	return tarLayer([]tarEntry{{name: path.Clean(dst), mode: 0o755, data: b}}, epoch)
}

func tarLayer(entries []tarEntry, epoch time.Time) (v1.Layer, error) {
	// Parents first, each once, in a fixed order.
	dirs := map[string]bool{}
	var all []tarEntry
	for _, e := range entries {
		for d := path.Dir(e.name); d != "/" && d != "."; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				all = append(all, tarEntry{name: d, mode: 0o755, dir: true})
			}
		}
		if e.dir {
			if dirs[e.name] {
				continue
			}
			dirs[e.name] = true
		}
		all = append(all, e)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].name < all[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range all {
		h := &tar.Header{
			Name:    strings.TrimPrefix(e.name, "/"),
			Mode:    e.mode,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}
