package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Sandbox is the registry of `relay run --local`: go-containerregistry's registry with
// referrers on, listening on 127.0.0.1, persisted under a directory so that a resumed run
// (a new process) finds what the previous one pushed. Blobs live on disk; manifests are
// journaled and replayed at start. It keeps its port between runs because the state file
// records references by host:port.
type Sandbox struct {
	dir     string
	srv     *http.Server
	ln      net.Listener
	journal *os.File
	mu      sync.Mutex
	handler http.Handler
}

type journalEntry struct {
	Method      string `json:"method"`
	Path        string `json:"path"`
	ContentType string `json:"content_type,omitempty"`
	Body        []byte `json:"body,omitempty"`
}

// StartSandbox starts (or restarts) the sandbox registry kept in dir.
func StartSandbox(ctx context.Context, dir string, logger *slog.Logger) (*Sandbox, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		return nil, fmt.Errorf("creating sandbox registry directory: %w", err)
	}
	s := &Sandbox{dir: dir}
	s.handler = registry.New(
		registry.WithReferrersSupport(true),
		registry.WithBlobHandler(registry.NewDiskBlobHandler(filepath.Join(dir, "blobs"))),
		registry.Logger(log.New(io.Discard, "", 0)),
	)
	n, err := s.replay()
	if err != nil {
		return nil, err
	}
	s.journal, err = os.OpenFile(filepath.Join(dir, "manifests.jsonl"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening sandbox registry journal: %w", err)
	}
	addrFile := filepath.Join(dir, "addr")
	addr := "127.0.0.1:0"
	if b, err := os.ReadFile(addrFile); err == nil {
		addr = strings.TrimSpace(string(b))
	}
	var lc net.ListenConfig
	s.ln, err = lc.Listen(ctx, "tcp", addr)
	if err != nil && addr != "127.0.0.1:0" {
		s.journal.Close()
		return nil, fmt.Errorf("sandbox registry cannot listen on %s again (%v): another relay --local may be running on this state; stop it, or start over with --restart", addr, err)
	}
	if err != nil {
		s.journal.Close()
		return nil, fmt.Errorf("sandbox registry: %w", err)
	}
	if err := os.WriteFile(addrFile, []byte(s.ln.Addr().String()), 0o644); err != nil {
		s.Close()
		return nil, err
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = s.srv.Serve(s.ln) }()
	logger.Debug("sandbox registry started", "addr", s.Addr(), "dir", dir, "manifests_replayed", n)
	return s, nil
}

// Addr is host:port of the registry.
func (s *Sandbox) Addr() string { return s.ln.Addr().String() }

// Close stops the server.
func (s *Sandbox) Close() error {
	var err error
	if s.srv != nil {
		err = s.srv.Close()
	}
	if s.journal != nil {
		s.journal.Close()
	}
	return err
}

func (s *Sandbox) serve(w http.ResponseWriter, r *http.Request) {
	isManifest := strings.Contains(r.URL.Path, "/manifests/")
	if !isManifest || (r.Method != http.MethodPut && r.Method != http.MethodDelete) {
		s.handler.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	// Serialise manifest writes so the journal order is the order the registry saw.
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, r)
	if rec.Code/100 == 2 {
		e := journalEntry{Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), Body: body}
		b, _ := json.Marshal(e)
		if _, err := s.journal.Write(append(b, '\n')); err != nil {
			http.Error(w, "sandbox journal: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (s *Sandbox) replay() (int, error) {
	path := filepath.Join(s.dir, "manifests.jsonl")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading sandbox registry journal: %w", err)
	}
	n, good := 0, 0
	for good < len(data) {
		end := bytes.IndexByte(data[good:], '\n')
		var e journalEntry
		if end < 0 || json.Unmarshal(data[good:good+end], &e) != nil {
			// A torn last line from a killed process: keep everything before it.
			if err := os.Truncate(path, int64(good)); err != nil {
				return n, fmt.Errorf("repairing sandbox registry journal: %w", err)
			}
			break
		}
		req := httptest.NewRequest(e.Method, e.Path, bytes.NewReader(e.Body))
		req.Header.Set("Content-Type", e.ContentType)
		s.handler.ServeHTTP(httptest.NewRecorder(), req)
		good += end + 1
		n++
	}
	return n, nil
}
