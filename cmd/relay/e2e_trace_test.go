//go:build integration

package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/relaydev/relay/internal/testutil"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes each export's protobuf.
type otlpReceiver struct {
	mu    sync.Mutex
	spans map[string]span // by span id
}

type span struct {
	name, trace, parent string
	client              bool
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(b, &req) != nil {
		http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				o.spans[hex.EncodeToString(s.SpanId)] = span{name: s.Name, trace: hex.EncodeToString(s.TraceId), parent: hex.EncodeToString(s.ParentSpanId), client: s.Kind == 3}
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Write(out)
}

// headerLog keeps the User-Agent and traceparent of every request a server got.
type headerLog struct {
	mu   sync.Mutex
	seen []string
}

func (h *headerLog) add(r *http.Request) {
	h.mu.Lock()
	h.seen = append(h.seen, r.Method+" "+r.URL.Path+"\t"+r.UserAgent()+"\t"+r.Header.Get("traceparent"))
	h.mu.Unlock()
}

// since is what was seen from the n-th request on.
func (h *headerLog) since(n int) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.seen[n:]...)
}

func (h *headerLog) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}

// checkHeaders fails for a request without relay's User-Agent and correlation id, or
// without a traceparent in traceID, and when fewer than min requests prove anything.
func checkHeaders(t *testing.T, seen []string, traceID string, min int) {
	t.Helper()
	if len(seen) < min {
		t.Fatalf("only %d requests seen: the check proves little", len(seen))
	}
	for _, h := range seen {
		f := strings.Split(h, "\t")
		if !strings.HasPrefix(f[1], "relay/") || !strings.Contains(f[1], "(correlation_id=e2e-run)") || !strings.HasPrefix(f[2], "00-"+traceID+"-") {
			t.Errorf("%s: User-Agent %q, traceparent %q", f[0], f[1], f[2])
		}
	}
}

func (h *headerLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.add(r); next.ServeHTTP(w, r) })
}

// TestE2ETraceContinuesTheCallers: a release run with TRACEPARENT and an OTLP endpoint
// exports one trace, the caller's: the run's span is the given span's child, each step's
// span the run's, and requests are client spans under the steps. Every request the
// registry and GitHub got carries relay's User-Agent with the correlation id and a
// traceparent of that trace, and every log line the trace id.
func TestE2ETraceContinuesTheCallers(t *testing.T) {
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	rcv := &otlpReceiver{spans: map[string]span{}}
	collector := httptest.NewServer(rcv)
	defer collector.Close()
	var hdrs headerLog
	reg := testutil.Registry(t, true, hdrs.wrap)
	gh := testutil.NewGitHub(t)
	gh.Fail = func(_ int, r *http.Request) int { hdrs.add(r); return 0 }
	dir := realExample(t, reg, fmt.Sprintf("signing: {mode: key, key: %s, tlog: false}\nrelease: {target: github, github: {repository: %s, base_url: %s}}\n",
		testKeyFile(t), testutil.FakeGitHubRepo, gh.BaseURL()))
	env := []string{"GITHUB_TOKEN=" + gh.Token, "TRACEPARENT=00-" + traceID + "-" + parentID + "-01", "OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL}
	r := runRelayEnv(t, dir, env, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}

	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	var run string
	steps, clients := map[string]string{}, 0
	for id, s := range rcv.spans {
		if s.trace != traceID {
			t.Errorf("span %s is in trace %s, not the caller's", s.name, s.trace)
		}
		switch {
		case s.name == "relay run":
			run = id
			if s.parent != parentID {
				t.Errorf("the run's span has parent %s, want TRACEPARENT's %s", s.parent, parentID)
			}
		case strings.HasPrefix(s.name, "relay "):
			steps[strings.TrimPrefix(s.name, "relay ")] = s.parent
		case s.client:
			clients++
		}
	}
	for _, st := range []string{"checkout", "build", "copy", "sign", "sbom", "provenance", "verify", "release"} {
		if p, ok := steps[st]; !ok || p != run || run == "" {
			t.Errorf("step %s: span parent %q, want the run's span %q", st, p, run)
		}
	}
	if clients < 20 {
		t.Errorf("%d client spans: every request should have one", clients)
	}

	checkHeaders(t, hdrs.since(0), traceID, 20)
	for _, rec := range r.logs {
		if rec["trace_id"] != traceID {
			t.Fatalf("a log line without the trace id: %v", rec)
		}
	}
	t.Logf("%d spans (%d client), %d requests checked", len(rcv.spans), clients, hdrs.len())
}
