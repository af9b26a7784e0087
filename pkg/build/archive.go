package build

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// ContextArchive is a build context packed for a cloud builder.
type ContextArchive struct {
	Digest string // sha256:... of the .tar.gz bytes
	Size   int64
	Files  int
}

// WriteContextArchive writes dir as a gzip'd tar to w, leaving out what dir/.dockerignore
// excludes (Docker's rules, through moby's own matcher), and returns its digest. The same
// tree gives the same bytes on any machine: entries sorted by path, every time set to epoch
// (the commit time), owner 0:0 with no names, modes reduced to 0755/0644, and a gzip header
// without name or time. The Dockerfile and .dockerignore are always included, as Docker does.
func WriteContextArchive(w io.Writer, dir string, epoch time.Time) (*ContextArchive, error) {
	pm, err := dockerignore(dir)
	if err != nil {
		return nil, err
	}
	var paths []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if pm != nil && rel != "Dockerfile" && rel != ".dockerignore" {
			skip, err := pm.MatchesOrParentMatches(rel)
			if err != nil {
				return fmt.Errorf(".dockerignore: %w", err)
			}
			// An excluded directory is still walked when an exception (!pattern) may
			// re-include something below it.
			if skip && !(d.IsDir() && pm.Exclusions()) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if skip {
				return nil
			}
		}
		paths = append(paths, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the build context %s: %w", dir, err)
	}
	sort.Strings(paths)

	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	gz, _ := gzip.NewWriterLevel(cw, gzip.BestCompression)
	gz.Header = gzip.Header{OS: 255} // no name, no time: "unknown" OS as well
	tw := tar.NewWriter(gz)
	files := 0
	for _, rel := range paths {
		full := filepath.Join(dir, filepath.FromSlash(rel))
		fi, err := os.Lstat(full)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Name: rel, ModTime: epoch, AccessTime: epoch, ChangeTime: epoch, Format: tar.FormatPAX}
		switch {
		case fi.IsDir():
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, rel+"/", 0o755
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(full)
			if err != nil {
				return nil, err
			}
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, target, 0o777
		case fi.Mode().IsRegular():
			hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, fi.Size(), 0o644
			if fi.Mode()&0o111 != 0 {
				hdr.Mode = 0o755
			}
		default:
			continue // sockets, devices, pipes have no place in a build context
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(full)
			if err != nil {
				return nil, err
			}
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, err
			}
			if n != hdr.Size {
				return nil, fmt.Errorf("%s changed while it was packed", rel)
			}
			files++
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return &ContextArchive{Digest: fmt.Sprintf("sha256:%x", h.Sum(nil)), Size: cw.n, Files: files}, nil
}

func dockerignore(dir string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("%s/.dockerignore: %w", dir, err)
	}
	for i, p := range patterns {
		patterns[i] = strings.TrimPrefix(p, "/")
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf("%s/.dockerignore: %w (fix the pattern; Docker's syntax applies)", dir, err)
	}
	return pm, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
