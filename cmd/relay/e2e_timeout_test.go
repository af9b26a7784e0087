//go:build integration

package main

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestE2ECopyFromHungRegistry: a registry that accepts connections and never answers fails
// `relay copy` with exit 1 and an error naming the host and the timeout, instead of hanging
// until the job's limit.
func TestE2ECopyFromHungRegistry(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	host := l.Addr().String()
	start := time.Now()
	code, _, stderr := runCLI(t, map[string]string{"RELAY_TIMEOUT": "1s", "RELAY_LOG_FORMAT": "text"}, "copy", host+"/acme/app:v1", "127.0.0.1:1/acme/app")
	took := time.Since(start)
	if code != exitStepFailed || !strings.Contains(stderr, host) || !strings.Contains(stderr, "no progress for 1s") {
		t.Fatalf("exit %d after %s:\n%s", code, took, stderr)
	}
	if !strings.Contains(stderr, "registry request failed, retrying") {
		t.Fatalf("the timed-out request was not retried:\n%s", stderr)
	}
	// A hang guard, not a speed target: six attempts of 1s plus their backoff.
	if took > 2*time.Minute {
		t.Fatalf("took %s", took)
	}
	t.Logf("failed after %s", took)
}
