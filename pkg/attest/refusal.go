package attest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sync/atomic"
	"time"

	"github.com/go-openapi/runtime"
	openapi "github.com/go-openapi/runtime/client"
	"github.com/go-openapi/strfmt"
	pbs "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	pb "github.com/sigstore/rekor-tiles/v2/pkg/generated/protobuf"
	rekorgen "github.com/sigstore/rekor/pkg/generated/client"
	rekorutil "github.com/sigstore/rekor/pkg/util"
	"google.golang.org/protobuf/encoding/protojson"
)

// refusedStatus says whether a Sigstore service's answer will not change by waiting: a bad
// token, a bad or forbidden request, an entry the log will not take.
func refusedStatus(code int) bool {
	switch code {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound,
		http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// RefusedError is a Sigstore service's refusal: retrying cannot help.
type RefusedError struct {
	Service string
	Status  int
	Msg     string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s refused the request (%d): %s", e.Service, e.Status, e.Msg)
}

// refusals counts the refusals the services' transports saw. Fulcio's and the timestamp
// authorities' clients (sigstore-go's) make their own errors from the answer, so the
// status is read on the way back instead of from the error's text.
type refusals struct{ n atomic.Int64 }

func (r *refusals) count() int64 {
	if r == nil {
		return 0
	}
	return r.n.Load()
}

func (r *refusals) transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		if err == nil && refusedStatus(resp.StatusCode) {
			r.n.Add(1)
		}
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// refusedErr reports whether err carries a refusal by its type: relay's own clients', or
// Rekor v1's generated responses (which carry their status code).
func refusedErr(err error) bool {
	var re *RefusedError
	var coded interface{ Code() int }
	return errors.As(err, &re) || errors.As(err, &coded) && refusedStatus(coded.Code())
}

// rekorV2 writes entries to a Rekor v2 log (POST /api/v2/log/entries) through relay's
// transport, so its requests carry relay's User-Agent and bounds, and a refusal is typed.
type rekorV2 struct {
	url    string
	client *http.Client
}

func newRekorV2(base string, transport http.RoundTripper, ua string) (*rekorV2, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	u.Path = path.Join(u.Path, "/api/v2/log/entries")
	if transport == nil {
		transport = http.DefaultTransport
	}
	return &rekorV2{url: u.String(), client: &http.Client{Transport: userAgent(transport, ua), Timeout: 30 * time.Second}}, nil
}

// Add implements sign.RekorV2Client.
func (w *rekorV2) Add(ctx context.Context, entry any) (*pbs.TransparencyLogEntry, error) {
	h, ok := entry.(*pb.HashedRekordRequestV002)
	if !ok {
		return nil, &RefusedError{Service: "Rekor v2", Msg: fmt.Sprintf("relay logs hashedrekord entries only, not %T", entry)}
	}
	payload, err := protojson.Marshal(&pb.CreateEntryRequest{Spec: &pb.CreateEntryRequest_HashedRekordRequestV002{HashedRekordRequestV002: h}})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Rekor v2 %s: %w", w.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 10<<20))
	if err != nil {
		return nil, fmt.Errorf("Rekor v2 %s: reading the answer: %w", w.url, err)
	}
	if resp.StatusCode != http.StatusCreated {
		if refusedStatus(resp.StatusCode) {
			return nil, &RefusedError{Service: "Rekor v2 " + w.url, Status: resp.StatusCode, Msg: string(bytes.TrimSpace(body))}
		}
		return nil, fmt.Errorf("Rekor v2 %s answered %d: %s", w.url, resp.StatusCode, bytes.TrimSpace(body))
	}
	var tle pbs.TransparencyLogEntry
	if err := protojson.Unmarshal(body, &tle); err != nil {
		return nil, fmt.Errorf("Rekor v2 %s: the entry it returned: %w", w.url, err)
	}
	return &tle, nil
}

func userAgent(next http.RoundTripper, ua string) http.RoundTripper {
	if ua == "" {
		return next
	}
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		req = req.Clone(req.Context())
		req.Header.Set("User-Agent", ua)
		return next.RoundTrip(req)
	})
}

// rekorV1 is Rekor v1's generated client over relay's transport (rekor's GetRekorClient
// builds its own, with a retry layer of its own), so its requests carry relay's
// User-Agent, bounds, traces and the one retry budget, and its errors the status.
func rekorV1(base string, transport http.RoundTripper) (*rekorgen.Rekor, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Path == "" {
		u.Path = rekorgen.DefaultBasePath
	}
	rt := openapi.NewWithClient(u.Host, u.Path, []string{u.Scheme}, &http.Client{Transport: transport, Timeout: 30 * time.Second})
	rt.Consumers["application/json"] = runtime.JSONConsumer()
	rt.Consumers["application/x-pem-file"] = runtime.TextConsumer()
	rt.Producers["application/json"] = runtime.JSONProducer()
	registry := strfmt.Default
	registry.Add("signedCheckpoint", &rekorutil.SignedNote{}, rekorutil.SignedCheckpointValidator)
	return rekorgen.New(rt, registry), nil
}
