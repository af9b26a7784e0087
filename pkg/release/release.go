// Package release publishes a release: its assets, the pin file and checksums.
package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"unicode"

	"github.com/relaydev/relay/internal/fsutil"
)

// MaxAssetSize is the largest asset any target accepts (GitHub's limit).
const MaxAssetSize = 2 << 30

// Asset is one file of a release.
type Asset struct {
	Name string
	Data []byte
}

// SHA256 is the asset's hex checksum.
func (a Asset) SHA256() string {
	s := sha256.Sum256(a.Data)
	return hex.EncodeToString(s[:])
}

// Release is what a publisher makes visible.
type Release struct {
	Tag    string
	Name   string
	Notes  string
	Assets []Asset
}

// Result says where the release is.
type Result struct {
	URL     string
	Written []string // assets uploaded or written
	Skipped []string // assets already present with the same checksum
}

// Publisher upserts a release: same name and checksum is skipped, never duplicated.
type Publisher interface {
	Name() string
	// Prepare proves, before the release step applies any tag (the commit point), that
	// Publish can write r: the target is writable, the assets fit, and nothing published
	// conflicts with them. It may create what stays invisible to users (a draft release).
	Prepare(ctx context.Context, r Release) error
	Publish(ctx context.Context, r Release) (*Result, error)
}

// validateAssets checks names, duplicates and sizes, before any request or write.
func validateAssets(assets []Asset, max int64) error {
	seen := map[string]bool{}
	for _, a := range assets {
		if err := ValidateAssetName(a.Name); err != nil {
			return err
		}
		if int64(len(a.Data)) > max {
			return fmt.Errorf("asset %s is %d bytes, over the release's limit of %d bytes per asset; nothing was uploaded", a.Name, len(a.Data), max)
		}
		if seen[a.Name] {
			return fmt.Errorf("asset %s is listed twice", a.Name)
		}
		seen[a.Name] = true
	}
	return nil
}

// ValidateAssetName rejects names that would escape a directory or break an upload.
func ValidateAssetName(n string) error {
	if n == "" || n == "." || n == ".." {
		return fmt.Errorf("asset name %q is empty or a dot name", n)
	}
	for _, r := range n {
		if r == '/' || r == '\\' || unicode.IsControl(r) {
			return fmt.Errorf("asset name %q holds a path separator or control character: use a plain file name", n)
		}
	}
	return nil
}

// Checksums renders SHA256SUMS (sha256sum's format) for the assets, sorted by name.
func Checksums(assets []Asset) []byte {
	sorted := append([]Asset(nil), assets...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var b bytes.Buffer
	for _, a := range sorted {
		fmt.Fprintf(&b, "%s  %s\n", a.SHA256(), a.Name)
	}
	return b.Bytes()
}

// Dir publishes into a local directory: the target of `relay run --local`.
type Dir struct {
	path   string
	logger *slog.Logger
}

// NewDir returns a directory publisher.
func NewDir(path string, logger *slog.Logger) (*Dir, error) {
	if path == "" {
		return nil, errors.New("release: directory is empty")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return &Dir{path: abs, logger: logger}, nil
}

// Name implements Publisher.
func (d *Dir) Name() string { return "dir" }

// Prepare implements Publisher: the directory exists, takes a file, and has room for
// every asset that is not already there with the same content.
func (d *Dir) Prepare(ctx context.Context, r Release) error {
	if err := validateAssets(r.Assets, MaxAssetSize); err != nil {
		return err
	}
	if err := os.MkdirAll(d.path, 0o755); err != nil {
		return fmt.Errorf("release directory %s cannot be created: %w (fix: make it writable or pass another --out)", d.path, unwrapPath(err))
	}
	probe, err := os.CreateTemp(d.path, ".relay-probe-*")
	if err != nil {
		return fmt.Errorf("release directory %s is not writable: %w (fix: make it writable or pass another --out)", d.path, unwrapPath(err))
	}
	probe.Close()
	os.Remove(probe.Name())
	var need uint64
	for _, a := range r.Assets {
		if old, err := os.ReadFile(filepath.Join(d.path, a.Name)); err != nil || !bytes.Equal(old, a.Data) {
			need += uint64(len(a.Data))
		}
	}
	if free, err := freeBytes(d.path); err == nil {
		// Each asset is written beside its old version before the rename: count it whole.
		if free < need {
			return fmt.Errorf("release directory %s has %d bytes free and the release needs %d (fix: free space or pass another --out)", d.path, free, need)
		}
	}
	return nil
}

// Check is Prepare without writing (for --dry-run): the directory, or the nearest
// existing parent it would be created in, is a writable directory; it reports the room.
func (d *Dir) Check(ctx context.Context) (string, error) {
	p := d.path
	for {
		st, err := os.Stat(p)
		if err == nil {
			if !st.IsDir() {
				return "", fmt.Errorf("%s is not a directory (fix: pass another --out)", p)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) || filepath.Dir(p) == p {
			return "", fmt.Errorf("release directory %s: %w (fix: pass another --out)", d.path, unwrapPath(err))
		}
		p = filepath.Dir(p)
	}
	if err := writable(p); err != nil {
		return "", fmt.Errorf("%s is not writable: %w (fix: make it writable or pass another --out)", p, err)
	}
	free, err := freeBytes(p)
	if err != nil {
		return fmt.Sprintf("%s writable", d.path), nil // free space unknown on this OS
	}
	return fmt.Sprintf("%s writable, %d MiB free", d.path, free>>20), nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// Publish writes every asset atomically; an identical file is left alone.
func (d *Dir) Publish(ctx context.Context, r Release) (*Result, error) {
	if err := validateAssets(r.Assets, MaxAssetSize); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(d.path, 0o755); err != nil {
		return nil, fmt.Errorf("creating release directory %s: %w", d.path, err)
	}
	res := &Result{URL: "file://" + d.path}
	for _, a := range r.Assets {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		p := filepath.Join(d.path, a.Name)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, a.Data) {
			res.Skipped = append(res.Skipped, a.Name)
			continue
		}
		if err := fsutil.WriteFileAtomic(p, a.Data, 0o644); err != nil {
			return res, fmt.Errorf("writing asset %s: %w", p, err)
		}
		res.Written = append(res.Written, a.Name)
	}
	d.logger.Info("release written", "dir", d.path, "written", len(res.Written), "unchanged", len(res.Skipped))
	return res, nil
}

// SafeName turns an image/platform label into a file-name fragment.
func SafeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ':' || r == '\\' || unicode.IsControl(r) || r == ' ' {
			return '-'
		}
		return r
	}, s)
}
