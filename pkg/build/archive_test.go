package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestContextArchive(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"Dockerfile":          "FROM scratch\n",
		".dockerignore":       "# build output and secrets\nnode_modules\n*.log\n!important.log\ndocs/**\n!docs/keep.md\n/secret.txt\nDockerfile\n",
		"main.go":             "package main\n",
		"run.sh":              "#!/bin/sh\n",
		"node_modules/x.js":   "x",
		"a.log":               "noise",
		"important.log":       "kept by an exception",
		"docs/a.md":           "a",
		"docs/keep.md":        "keep",
		"secret.txt":          "root only",
		"sub/secret.txt":      "not the root one",
		"sub/deeper/file.txt": "deep",
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "run.sh"), 0o755)
	os.Symlink("main.go", filepath.Join(dir, "link"))
	epoch := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	var first bytes.Buffer
	a, err := WriteContextArchive(&first, dir, epoch)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(first.Bytes()); a.Digest != fmt.Sprintf("sha256:%x", sum) || a.Size != int64(first.Len()) {
		t.Fatalf("digest %s size %d do not describe the bytes", a.Digest, a.Size)
	}
	got := entries(t, first.Bytes())
	want := []string{".dockerignore 644", "Dockerfile 644", "docs/ 755", "docs/keep.md 644", "important.log 644", "link -> main.go", "main.go 644", "run.sh 755",
		"sub/ 755", "sub/deeper/ 755", "sub/deeper/file.txt 644", "sub/secret.txt 644"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Other file times, a different umask and a new excluded file change nothing.
	later := time.Now().Add(time.Hour)
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { os.Chtimes(p, later, later); return nil })
	os.Chmod(filepath.Join(dir, "main.go"), 0o600)
	os.WriteFile(filepath.Join(dir, "b.log"), []byte("more noise"), 0o644)
	var second bytes.Buffer
	b, err := WriteContextArchive(&second, dir, epoch)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) || a.Digest != b.Digest {
		t.Fatalf("two packs of the same tree differ: %s vs %s", a.Digest, b.Digest)
	}
	// A content change does change it.
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main // changed\n"), 0o644)
	var third bytes.Buffer
	if c, _ := WriteContextArchive(&third, dir, epoch); c.Digest == a.Digest {
		t.Fatal("a changed file kept the digest")
	}

	os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("[\n"), 0o644)
	if _, err := WriteContextArchive(io.Discard, dir, epoch); err == nil || !strings.Contains(err.Error(), ".dockerignore") {
		t.Fatalf("bad pattern: %v", err)
	}
}

func entries(t *testing.T, b []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Fatalf("gzip header carries %q %v", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || !h.ModTime.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
			t.Fatalf("%s: owner %d:%d %q, time %v", h.Name, h.Uid, h.Gid, h.Uname, h.ModTime)
		}
		if h.Typeflag == tar.TypeSymlink {
			out = append(out, h.Name+" -> "+h.Linkname)
			continue
		}
		out = append(out, fmt.Sprintf("%s %o", h.Name, h.Mode))
	}
	if !sort.StringsAreSorted(out) {
		t.Fatalf("entries not sorted: %v", out)
	}
	return out
}
