package release

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDirPublishUpserts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dist")
	d, err := NewDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	rel := Release{Tag: "v1", Assets: []Asset{{Name: "a.json", Data: []byte("A")}, {Name: "b.txt", Data: []byte("B")}}}
	res, err := d.Publish(context.Background(), rel)
	if err != nil || len(res.Written) != 2 || !strings.HasPrefix(res.URL, "file:///") {
		t.Fatalf("first publish %+v %v", res, err)
	}
	rel.Assets[1].Data = []byte("B2")
	res, err = d.Publish(context.Background(), rel)
	if err != nil || len(res.Skipped) != 1 || res.Skipped[0] != "a.json" || len(res.Written) != 1 {
		t.Fatalf("second publish %+v %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "b.txt")); string(b) != "B2" {
		t.Fatalf("b.txt = %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestAssetNames(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a/b", `a\b`, "a\x00b", "line\nbreak"} {
		if err := ValidateAssetName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
		d, _ := NewDir(t.TempDir(), nil)
		if _, err := d.Publish(context.Background(), Release{Assets: []Asset{{Name: "ok"}, {Name: bad}}}); err == nil {
			t.Errorf("publish accepted %q", bad)
		}
	}
	for _, good := range []string{"SHA256SUMS", "hello_linux-amd64.spdx.json", "images.lock.json"} {
		if err := ValidateAssetName(good); err != nil {
			t.Errorf("%q rejected: %v", good, err)
		}
	}
}

func TestChecksumsFormat(t *testing.T) {
	got := string(Checksums([]Asset{{Name: "b", Data: []byte("x")}, {Name: "a", Data: nil}}))
	want := "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  a\n" +
		"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881  b\n"
	if got != want {
		t.Fatalf("got %q", got)
	}
}

func TestLock(t *testing.T) {
	l := &Lock{Version: LockVersion, Release: "v1", Images: []LockedImage{{
		Reference: "r/x@sha256:1", Referrers: []LockedReferrer{{Digest: "sha256:b", Subject: "sha256:2"}, {Digest: "sha256:a", Subject: "sha256:1"}},
	}}}
	j, err := l.JSON()
	if err != nil || strings.Index(string(j), "sha256:a") > strings.Index(string(j), "sha256:b") {
		t.Fatalf("referrers not sorted: %s %v", j, err)
	}
	if string(l.Text()) != "r/x@sha256:1\n" {
		t.Fatalf("images.txt %q", l.Text())
	}
	if SafeName("linux/arm/v7") != "linux-arm-v7" {
		t.Fatal(SafeName("linux/arm/v7"))
	}
}
