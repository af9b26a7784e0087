package testutil

import (
	"net/http"
	"slices"
	"strings"
	"sync"
)

// RegistryWrites records the write requests a registry accepted, as "kind repo ref": a
// blob committed (PUT of an upload, or a monolithic POST), mounted (POST ?mount answered
// 201), a manifest put by digest or by tag, a delete. Upload sessions and chunks are not
// writes of their own; any other accepted write is recorded as "METHOD path", so a
// prediction must name it too.
type RegistryWrites struct {
	mu     sync.Mutex
	writes []string
}

// Wrap records what h accepts.
func (l *RegistryWrites) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if r.Method == http.MethodGet || r.Method == http.MethodHead || rec.status >= 300 || !strings.HasPrefix(r.URL.Path, "/v2/") {
			return
		}
		if e := writeEntry(r, rec.status); e != "" {
			l.mu.Lock()
			l.writes = append(l.writes, e)
			l.mu.Unlock()
		}
	})
}

func writeEntry(r *http.Request, status int) string {
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	q := r.URL.Query()
	if i := strings.LastIndex(p, "/blobs/uploads/"); i > 0 {
		switch {
		case r.Method == http.MethodPut, r.Method == http.MethodPost && q.Get("digest") != "":
			return "blob " + p[:i] + " " + q.Get("digest")
		case r.Method == http.MethodPost && status == http.StatusCreated && q.Get("mount") != "":
			return "mount " + p[:i] + " " + q.Get("mount")
		}
		return ""
	}
	if j := strings.LastIndex(p, "/manifests/"); j > 0 {
		switch r.Method {
		case http.MethodPut:
			return "manifest " + p[:j] + " " + p[j+len("/manifests/"):]
		case http.MethodDelete:
			return "delete " + p[:j] + " " + p[j+len("/manifests/"):]
		}
	}
	return r.Method + " " + p
}

// List returns the writes in the order they were accepted.
func (l *RegistryWrites) List() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.writes)
}

// Reset forgets what was recorded (a test's own seeding).
func (l *RegistryWrites) Reset() {
	l.mu.Lock()
	l.writes = nil
	l.mu.Unlock()
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(c int) {
	if s.status == 0 {
		s.status = c
	}
	s.ResponseWriter.WriteHeader(c)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}
