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
	Publish(ctx context.Context, r Release) (*Result, error)
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

// Publish writes every asset atomically; an identical file is left alone.
func (d *Dir) Publish(ctx context.Context, r Release) (*Result, error) {
	for _, a := range r.Assets {
		if err := ValidateAssetName(a.Name); err != nil {
			return nil, err
		}
		if int64(len(a.Data)) > MaxAssetSize {
			return nil, fmt.Errorf("asset %s is %d bytes, over the 2 GiB limit", a.Name, len(a.Data))
		}
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
