package oci

import (
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/relaydev/relay/internal/httpx"
)

// The registry client retries through relay's one retry layer; these names keep the
// package usable on its own.
type (
	RetryPolicy      = httpx.RetryPolicy
	RetryOptions     = httpx.RetryOptions
	RetryBudgetError = httpx.RetryBudgetError
	RetriedError     = httpx.RetriedError
)

// DefaultRetryPolicy is what relay uses unless the config says otherwise.
var DefaultRetryPolicy = httpx.DefaultRetryPolicy

// Retry is httpx.Retry naming its hosts registries: go-containerregistry retries streamed
// blob uploads itself.
func Retry(next http.RoundTripper, o RetryOptions) http.RoundTripper {
	if o.Service == "" {
		o.Service = "registry"
	}
	return httpx.Retry(next, o)
}

// ggcrRetry is go-containerregistry's retry predicate under relay's Retry, so one layer
// retries each request: what Retry could replay it retried already (within the host's
// budget, and logged), so it is not retried again underneath (with relay at 2 attempts a
// failing registry saw 6 manifest PUTs); only a streamed upload, which Retry cannot replay
// and go-containerregistry re-opens from the layer, is left to it.
func ggcrRetry(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) && te.Request != nil && (te.Request.Body == nil || te.Request.Body == http.NoBody || te.Request.GetBody != nil) {
		return false
	}
	if httpx.Retried(err) {
		return false
	}
	// go-containerregistry's own predicate, for what Retry left alone.
	var tmp interface{ Temporary() bool }
	return errors.As(err, &tmp) && tmp.Temporary() || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}
