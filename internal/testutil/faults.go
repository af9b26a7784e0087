package testutil

import (
	"io"
	"math/rand"
	"net/http"
	"strings"
	"sync"
)

// FaultCounts records what a Faults handler did.
type FaultCounts struct {
	mu                                 sync.Mutex
	Requests, Errors, Throttled, Reset int
}

func (c *FaultCounts) add(f *int) { c.mu.Lock(); *f++; c.mu.Unlock() }

// Faults answers about rate of the requests with a failure, chosen by a seeded random
// source: a 500, 502 or 503; a 429 with Retry-After; or, on blob downloads, a connection
// reset half-way through the body. Every other response is streamed in small chunks, like a
// slow link. It never sleeps: the client's clock decides how long backoff takes.
func Faults(rate float64, seed int64, counts *FaultCounts) func(http.Handler) http.Handler {
	var mu sync.Mutex
	rnd := rand.New(rand.NewSource(seed))
	roll := func() (float64, int) {
		mu.Lock()
		defer mu.Unlock()
		return rnd.Float64(), rnd.Intn(5)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			counts.add(&counts.Requests)
			p, kind := roll()
			if p < rate && r.URL.Path != "/v2/" {
				switch kind {
				case 0, 1, 2:
					counts.add(&counts.Errors)
					http.Error(w, "injected", []int{500, 502, 503}[kind])
					return
				case 3:
					counts.add(&counts.Throttled)
					w.Header().Set("Retry-After", "2")
					http.Error(w, "slow down", http.StatusTooManyRequests)
					return
				case 4:
					if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
						counts.add(&counts.Reset)
						next.ServeHTTP(&resetWriter{ResponseWriter: w, cut: 100}, r)
						return
					}
				}
			}
			next.ServeHTTP(&chunkWriter{ResponseWriter: w}, r)
		})
	}
}

// resetWriter passes the headers and cut bytes of the body, then drops the connection.
type resetWriter struct {
	http.ResponseWriter
	cut, sent int
}

func (rw *resetWriter) Write(p []byte) (int, error) {
	if rw.sent+len(p) > rw.cut {
		rw.ResponseWriter.Write(p[:rw.cut-rw.sent])
		rw.ResponseWriter.(http.Flusher).Flush()
		// http.ErrAbortHandler makes the server close the connection mid-body.
		panic(http.ErrAbortHandler)
	}
	rw.sent += len(p)
	return rw.ResponseWriter.Write(p)
}

// chunkWriter writes in 4 KiB pieces with a flush after each: a slow, chatty link.
type chunkWriter struct{ http.ResponseWriter }

func (cw *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 4<<10)
		m, err := cw.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		if f, ok := cw.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[k:]
	}
	return n, nil
}

// CutUploads cuts the request body of the first n requests that match after `after`
// bytes and then drops the client's connection, as when a link dies in the middle of a blob
// upload. The handler behind sees the truncated body, like a registry whose client vanished.
func CutUploads(n int, after int64, match func(*http.Request) bool) func(http.Handler) http.Handler {
	var mu sync.Mutex
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			cut := n > 0 && match(r)
			if cut {
				n--
			}
			mu.Unlock()
			if !cut {
				next.ServeHTTP(w, r)
				return
			}
			r.Body = &cutBody{r: io.LimitReader(r.Body, after)}
			next.ServeHTTP(discardWriter{h: http.Header{}}, r)
			panic(http.ErrAbortHandler) // the client sees its connection reset mid-request
		})
	}
}

type cutBody struct{ r io.Reader }

func (c *cutBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (c *cutBody) Close() error { return nil }

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}
