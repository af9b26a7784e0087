package httpx_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/internal/testutil"
)

func client(d time.Duration) *http.Client {
	return &http.Client{Transport: httpx.IdleTimeout(httpx.Transport(), func(string) time.Duration { return d })}
}

func TestIdleTimeout(t *testing.T) {
	const d = 150 * time.Millisecond
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := w.(http.Flusher)
		switch r.URL.Path {
		case "/stall": // headers and some body, then nothing
			w.Write([]byte("partial"))
			f.Flush()
			<-release
		case "/slow": // slower in total than the timeout, but always moving
			for i := 0; i < 12; i++ {
				w.Write([]byte("x"))
				f.Flush()
				time.Sleep(d / 4)
			}
		case "/upload":
			n, _ := io.Copy(io.Discard, r.Body)
			w.Write([]byte(strings.Repeat("y", int(n))))
		}
	}))
	defer srv.Close()
	defer close(release) // before Close, which waits for the stalled handler

	// A server that accepts the connection and never answers.
	hang := testutil.HungServer(t)
	_, err := client(d).Get("http://" + hang + "/v2/")
	var te *httpx.TimeoutError
	if !errors.As(err, &te) || te.Host != hang || te.After != d || te.Phase != "waiting for the response" {
		t.Fatalf("hanging server: %v", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a timeout must be a net.Error that retry layers retry: %T", err)
	}
	for _, want := range []string{"GET " + hang + "/v2/", "no progress for 150ms", "--timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}

	// A body that stops moving.
	resp, err := client(d).Get(srv.URL + "/stall")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.As(err, &te) || te.Phase != "reading the response body" {
		t.Fatalf("stalled body: %v", err)
	}

	// Slow but moving: 12 bytes over twice the timeout.
	resp, err = client(d).Get(srv.URL + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != strings.Repeat("x", 12) {
		t.Fatalf("slow but moving body: %q %v", b, err)
	}

	// Request bodies count as progress too, and a finished request is not cancelled later.
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/upload", strings.NewReader(strings.Repeat("z", 1<<20)))
	resp, err = client(d).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(b) != 1<<20 {
		t.Fatalf("upload: %d bytes, %v", len(b), err)
	}
}
