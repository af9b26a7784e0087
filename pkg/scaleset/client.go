// Package scaleset is a client of GitHub Actions' runner scale set service: the scale set
// itself, its message session (job assignments by long poll), job acquisition, just-in-time
// runner configs and runner removal. It speaks the protocol of github.com/actions/scaleset
// (the reference, which the module proxy here does not serve), for the endpoints relay's
// listener needs, through relay's HTTP chain.
package scaleset

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

const (
	scaleSetPath = "_apis/runtime/runnerscalesets"
	runnersPath  = "_apis/distributedtask/pools/0/agents"
	groupsPath   = "_apis/runtime/runnergroups"
	apiVersion   = "6.0-preview"
	// MaxCapacityHeader tells the broker how many runners the listener may still start.
	MaxCapacityHeader = "X-ScaleSetMaxCapacity"
)

// Options configure a Client.
type Options struct {
	// ConfigURL is the scope's page: https://github.com/ORG or https://github.com/ORG/REPO
	// (or an enterprise's https://github.com/enterprises/NAME).
	ConfigURL string
	// APIURL is GitHub's REST API (https://api.github.com; GHES: https://HOST/api/v3).
	APIURL string
	// RegistrationToken mints a runner registration token for the scope (with the App's
	// installation token); it is exchanged for the Actions service's admin token.
	RegistrationToken func(ctx context.Context) (string, error)
	HTTP              *http.Client
	Logger            *slog.Logger
	Now               func() time.Time
	UserAgent         string
}

// Client talks to the Actions service of one scope. It is safe for concurrent use.
type Client struct {
	o Options

	mu      sync.Mutex
	service string // the Actions service's URL for the scope
	admin   string // its admin token
	expires time.Time
}

// New checks o and returns a client; it connects on first use.
func New(o Options) (*Client, error) {
	if _, err := url.Parse(o.ConfigURL); err != nil || !strings.HasPrefix(o.ConfigURL, "https://") && !strings.HasPrefix(o.ConfigURL, "http://") {
		return nil, fmt.Errorf("scale set config URL %q is not the scope's page, e.g. https://github.com/acme", o.ConfigURL)
	}
	if o.APIURL == "" {
		o.APIURL = "https://api.github.com"
	}
	if o.RegistrationToken == nil {
		return nil, errors.New("scale set client needs a way to mint registration tokens")
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 2 * time.Minute}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.UserAgent == "" {
		o.UserAgent = "relay"
	}
	o.APIURL = strings.TrimSuffix(o.APIURL, "/")
	return &Client{o: o}, nil
}

// ErrNotFound is a scale set (or runner) the service does not have: deleted, or never made.
var ErrNotFound = errors.New("not found")

// ErrSessionConflict is another listener holding the scale set's message session.
var ErrSessionConflict = errors.New("another listener holds the scale set's message session")

// ErrTokenExpired is a message queue token the broker no longer accepts.
var ErrTokenExpired = errors.New("message queue token expired")

// Error is an unexpected answer of the service; its body's message, never a token.
type Error struct {
	Method, Path string
	Status       int
	Message      string
	wrapped      error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("scale set service: %s %s: %d", e.Method, e.Path, e.Status)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

func (e *Error) Unwrap() error { return e.wrapped }

// Temporary reports a 5xx or 429: worth a retry after a pause.
func (e *Error) Temporary() bool { return e.Status >= 500 || e.Status == http.StatusTooManyRequests }

// connect exchanges a registration token for the service URL and an admin token, again a
// minute before the admin token expires.
func (c *Client) connect(ctx context.Context) (string, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.admin != "" && c.o.Now().Add(time.Minute).Before(c.expires) {
		return c.service, c.admin, nil
	}
	reg, err := c.o.RegistrationToken(ctx)
	if err != nil {
		return "", "", fmt.Errorf("minting a runner registration token: %w", err)
	}
	body, _ := json.Marshal(map[string]string{"url": c.o.ConfigURL, "runner_event": "register"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.o.APIURL+"/actions/runner-registration", bytes.NewReader(body))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "RemoteAuth "+reg)
	var out struct {
		URL   string `json:"url"`
		Token string `json:"token"`
	}
	if err := c.send(req, "/actions/runner-registration", &out, http.StatusOK, http.StatusCreated); err != nil {
		return "", "", err
	}
	if out.URL == "" || out.Token == "" {
		return "", "", errors.New("scale set service: runner-registration answered without a service URL or token")
	}
	exp, err := jwtExpiry(out.Token)
	if err != nil {
		return "", "", fmt.Errorf("scale set service: admin token: %w", err)
	}
	c.service, c.admin, c.expires = strings.TrimSuffix(out.URL, "/")+"/", out.Token, exp
	c.o.Logger.Debug("scale set service connected", "service", c.service, "token_expires", exp)
	return c.service, c.admin, nil
}

// jwtExpiry reads a JWT's exp claim, unverified: the service's own token, to refresh it.
func jwtExpiry(tok string) (time.Time, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, errors.New("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, errors.New("its payload is not base64url")
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Exp == 0 {
		return time.Time{}, errors.New("it has no exp claim")
	}
	return time.Unix(claims.Exp, 0), nil
}

// call calls the Actions service with the admin token (or bearer, when not empty).
func (c *Client) call(ctx context.Context, method, path string, query url.Values, bearer string, in, out any, want ...int) error {
	base, admin, err := c.connect(ctx)
	if err != nil {
		return err
	}
	if query == nil {
		query = url.Values{}
	}
	query.Set("api-version", apiVersion)
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path+"?"+query.Encode(), body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer == "" {
		bearer = admin
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	return c.send(req, path, out, want...)
}

// send does req and decodes the answer into out when its status is one of want.
func (c *Client) send(req *http.Request, path string, out any, want ...int) error {
	req.Header.Set("User-Agent", c.o.UserAgent)
	resp, err := c.o.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("scale set service: %s %s: reading the answer: %w", req.Method, path, err)
	}
	for _, w := range want {
		if resp.StatusCode == w {
			if out == nil || len(bytes.TrimSpace(b)) == 0 {
				return nil
			}
			if err := json.Unmarshal(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), out); err != nil {
				return fmt.Errorf("scale set service: %s %s: %w", req.Method, path, err)
			}
			return nil
		}
	}
	e := &Error{Method: req.Method, Path: path, Status: resp.StatusCode, Message: serviceMessage(b)}
	switch resp.StatusCode {
	case http.StatusNotFound:
		e.wrapped = ErrNotFound
	case http.StatusConflict:
		e.wrapped = ErrSessionConflict
	case http.StatusUnauthorized:
		e.wrapped = ErrTokenExpired
	}
	return e
}

// serviceMessage is the "message" of a JSON error body, bounded; never the raw body,
// which could echo a request's token.
func serviceMessage(b []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), &m) != nil {
		return ""
	}
	if r := []rune(m.Message); len(r) > 300 {
		return string(r[:300]) + "…"
	}
	return m.Message
}

// Connect exchanges a registration token for the service's admin token now (relay doctor).
func (c *Client) Connect(ctx context.Context) error {
	_, _, err := c.connect(ctx)
	return err
}
