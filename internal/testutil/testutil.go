// Package testutil holds helpers shared by relay's tests; production code never imports it.
package testutil

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// RegistryHandler is go-containerregistry's in-memory registry, to put behind a handler
// of the test's own.
func RegistryHandler(referrers bool) http.Handler {
	// registry.Logger(nil) panics on the first request: give it a discard logger.
	return registry.New(registry.WithReferrersSupport(referrers), registry.Logger(log.New(io.Discard, "", 0)))
}

// Registry starts go-containerregistry's registry on 127.0.0.1 for the test and returns
// host:port. wrap, when given, decorates the handler (fault injection, request counting).
func Registry(t testing.TB, referrers bool, wrap ...func(http.Handler) http.Handler) string {
	t.Helper()
	h := RegistryHandler(referrers)
	for _, w := range wrap {
		h = w(h)
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// Golden compares got with the file at path; with update (the package's -update flag) it
// rewrites the file instead.
func Golden(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it with -update)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs (if the change is meant, rerun with -update):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
