// Package github is relay's one GitHub REST client: releases and their assets,
// attestations, runner registration and scale sets, and GitHub App installation tokens
// all go through it, over relay's HTTP chain (one retry layer with a budget per host,
// rate limits waited out, relay's User-Agent, traces).
package github

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/relaydev/relay/internal/httpx"
)

// DefaultBaseURL is github.com's REST API.
const DefaultBaseURL = "https://api.github.com"

// APIVersion is the REST API version relay speaks.
const APIVersion = "2022-11-28"

// Options configure a Client.
type Options struct {
	// BaseURL is the REST API root: https://api.github.com (default), or a GitHub
	// Enterprise Server's https://HOST/api/v3.
	BaseURL string
	// UploadURL is where release assets go when a release does not say (its upload_url
	// does): uploads.github.com, or GHES's https://HOST/api/uploads.
	UploadURL string
	// Token returns the credential of each request: a token, an installation token that
	// renews itself, or an App's JWT.
	Token func(ctx context.Context) (string, error)
	HTTP  *http.Client
	// Retrier is the retry layer HTTP's transport already includes (relay's chain); nil
	// adds one over HTTP's transport.
	Retrier *httpx.Retrier
}

// Client calls GitHub's REST API.
type Client struct {
	o       Options
	retrier *httpx.Retrier
}

// Static is a token that never changes (GITHUB_TOKEN).
func Static(token string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return token, nil }
}

// New validates the options.
func New(o Options) (*Client, error) {
	if o.BaseURL == "" {
		o.BaseURL = DefaultBaseURL
	}
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	if u, err := url.Parse(o.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("GitHub API URL %q is not an http(s) URL: use https://api.github.com or https://HOST/api/v3", o.BaseURL)
	}
	if o.UploadURL == "" {
		o.UploadURL = uploadURL(o.BaseURL)
	}
	o.UploadURL = strings.TrimRight(o.UploadURL, "/")
	if o.Token == nil {
		return nil, errors.New("GitHub client: no token source")
	}
	c := &Client{o: o}
	c.o.HTTP, c.retrier = httpx.Retrying(o.HTTP, o.Retrier, httpx.RetryOptions{})
	for _, u := range []string{o.BaseURL, o.UploadURL} {
		if p, err := url.Parse(u); err == nil {
			c.retrier.Name("GitHub", p.Host)
		}
	}
	return c, nil
}

// uploadURL derives the uploads root from the API root, as GitHub lays them out.
func uploadURL(base string) string {
	if base == DefaultBaseURL {
		return "https://uploads.github.com"
	}
	if b, ok := strings.CutSuffix(base, "/api/v3"); ok {
		return b + "/api/uploads"
	}
	return base
}

// BaseURL is the REST API root, without a trailing slash.
func (c *Client) BaseURL() string { return c.o.BaseURL }

// Retrier is the retry layer the client's requests go through, for operations that must be
// redone whole (an upload that may have landed) to charge the same budget.
func (c *Client) Retrier() *httpx.Retrier { return c.retrier }

// Error is an answer of GitHub other than 2xx.
type Error struct {
	Method, URL string
	Status      int
	Message     string
	// Errors are the details of a 422 (code "already_exists", ...).
	Errors []struct {
		Resource string `json:"resource"`
		Field    string `json:"field"`
		Code     string `json:"code"`
		Message  string `json:"message"`
	}
	DocumentationURL string
	// Accepted is X-Accepted-GitHub-Permissions: what the call needs, when GitHub says.
	Accepted string
	// RateLimited is a rate limit the retry layer could not wait out within its budget.
	RateLimited bool
	Header      http.Header
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Status, e.Message)
	for _, d := range e.Errors {
		msg += fmt.Sprintf(" [%s %s %s]", d.Resource, d.Field, d.Code)
	}
	if e.Accepted != "" {
		msg += " (needs " + e.Accepted + ")"
	}
	return msg
}

// Has says whether one of the 422 details has this code.
func (e *Error) Has(code string) bool {
	for _, d := range e.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}

// StatusOf is the status of a GitHub error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// TokenError is a request that never went out: its credential could not be had (an App
// not installed where asked, an expired key). Its cause may hold another request's Error.
type TokenError struct{ Err error }

func (e *TokenError) Error() string { return "GitHub token: " + e.Err.Error() }
func (e *TokenError) Unwrap() error { return e.Err }

// Response is a successful answer: its status, headers and the next page, if any.
type Response struct {
	Status int
	Header http.Header
	Next   string // the Link rel="next" URL
}

// Do sends in (JSON, or nil) to path (relative to the API root, or an absolute URL GitHub
// gave) and decodes a 2xx answer into out (nil: discarded). Other answers are an *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) (*Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := c.request(ctx, method, c.url(path), body, "application/json")
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	if in == nil {
		req.Header.Del("Content-Type")
	}
	return c.send(req, out, 32<<20)
}

// Upload posts data as a release asset named name to uploadURL (a release's upload_url,
// template and all; empty: the client's uploads root with path) and decodes the asset.
func (c *Client) Upload(ctx context.Context, uploadURL, path, name, mediaType string, data []byte, out any) (*Response, error) {
	u := uriTemplate.ReplaceAllString(uploadURL, "")
	if u == "" {
		u = c.o.UploadURL + path
	}
	u += "?name=" + url.QueryEscape(name)
	req, err := c.request(ctx, http.MethodPost, u, bytes.NewReader(data), mediaType)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	return c.send(req, out, 1<<20)
}

var uriTemplate = regexp.MustCompile(`\{[^}]*\}$`)

// Download reads the raw content at path (a release asset's API URL), at most limit bytes,
// following GitHub's redirect to its storage without the token.
func (c *Client) Download(ctx context.Context, path string, limit int64) ([]byte, error) {
	req, err := c.request(ctx, http.MethodGet, c.url(path), nil, "")
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/octet-stream")
	resp, err := c.o.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redact(req.URL), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, c.errorOf(req, resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("GET %s: more than %d bytes", redact(req.URL), limit)
	}
	return b, err
}

func (c *Client) url(path string) string {
	if strings.HasPrefix(path, "https://") || strings.HasPrefix(path, "http://") {
		return path
	}
	return c.o.BaseURL + "/" + strings.TrimLeft(path, "/")
}

func (c *Client) request(ctx context.Context, method, u string, body io.Reader, ctype string) (*http.Request, error) {
	tok, err := c.o.Token(ctx)
	if err != nil {
		return nil, &TokenError{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if tok != "" { // an empty token: an anonymous request, for public data
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("X-GitHub-Api-Version", APIVersion)
	if body != nil && ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return req, nil
}

func (c *Client) send(req *http.Request, out any, limit int64) (*Response, error) {
	resp, err := c.o.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, redact(req.URL), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, c.errorOf(req, resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", req.Method, redact(req.URL), err)
	}
	if out != nil && len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("%s %s: the answer is not what GitHub sends: %w", req.Method, redact(req.URL), err)
		}
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Next: nextLink(resp.Header.Get("Link"))}, nil
}

func (c *Client) errorOf(req *http.Request, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Method: req.Method, URL: redact(req.URL), Status: resp.StatusCode, Header: resp.Header,
		Accepted: resp.Header.Get("X-Accepted-GitHub-Permissions")}
	var body struct {
		Message          string `json:"message"`
		DocumentationURL string `json:"documentation_url"`
		Errors           json.RawMessage
	}
	if json.Unmarshal(b, &body) == nil {
		e.Message, e.DocumentationURL = body.Message, body.DocumentationURL
		json.Unmarshal(body.Errors, &e.Errors) // a list of objects, or of strings on some endpoints
	} else {
		e.Message = strings.TrimSpace(string(b))
	}
	_, e.RateLimited = httpx.Retryable(resp, nil)
	e.RateLimited = e.RateLimited && resp.StatusCode == http.StatusForbidden
	return e
}

var linkNext = regexp.MustCompile(`<([^>]+)>;\s*rel="next"`)

func nextLink(h string) string {
	if m := linkNext.FindStringSubmatch(h); m != nil {
		return m[1]
	}
	return ""
}

// redact drops the query, which may carry a signed storage URL's credentials.
func redact(u *url.URL) string {
	c := *u
	c.RawQuery, c.User = "", nil
	return c.String()
}
