package attest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// TokenSource yields an OIDC identity token for Fulcio. Sources are asked each time a
// certificate is needed, so short-lived tokens are never reused past their life.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	// Name says where tokens come from, for logs and errors.
	Name() string
}

// ErrNoIDTokenPermission is the GitHub Actions job that lacks `permissions: id-token: write`.
var ErrNoIDTokenPermission = errors.New("this GitHub Actions job cannot request an OIDC token: add `permissions: id-token: write` to the workflow or job")

// TokenSourceFromEnv picks where identity tokens come from, first match wins:
//  1. tokenFile (signing.token_file), re-read before each use: projected Kubernetes tokens rotate;
//  2. SIGSTORE_ID_TOKEN, a token handed in by the platform;
//  3. GitHub Actions' token service (ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN), audience sigstore.
//
// There is no interactive flow: relay runs unattended.
func TokenSourceFromEnv(getenv func(string) string, tokenFile string, client *http.Client) (TokenSource, error) {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	switch {
	case tokenFile != "":
		return fileToken(tokenFile), nil
	case getenv("SIGSTORE_ID_TOKEN") != "":
		return staticToken(getenv("SIGSTORE_ID_TOKEN")), nil
	case getenv("ACTIONS_ID_TOKEN_REQUEST_URL") != "" && getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN") != "":
		return &actionsToken{url: getenv("ACTIONS_ID_TOKEN_REQUEST_URL"), bearer: getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN"), client: client}, nil
	case getenv("GITHUB_ACTIONS") == "true":
		return nil, ErrNoIDTokenPermission
	}
	return nil, errors.New("keyless signing needs an OIDC identity token and none was found: run in GitHub Actions with `permissions: id-token: write`, set SIGSTORE_ID_TOKEN, or name a token file in signing.token_file")
}

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }
func (s staticToken) Name() string                          { return "SIGSTORE_ID_TOKEN" }

type fileToken string

func (f fileToken) Token(context.Context) (string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return "", fmt.Errorf("reading the identity token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("the identity token file %s is empty", string(f))
	}
	return tok, nil
}
func (f fileToken) Name() string { return "token file " + string(f) }

// actionsToken asks GitHub Actions' token service for a token with audience sigstore.
type actionsToken struct {
	url, bearer string
	client      *http.Client
}

func (a *actionsToken) Name() string { return "GitHub Actions OIDC" }

func (a *actionsToken) Token(ctx context.Context) (string, error) {
	u, err := url.Parse(a.url)
	if err != nil {
		return "", fmt.Errorf("ACTIONS_ID_TOKEN_REQUEST_URL: %w", err)
	}
	q := u.Query()
	q.Set("audience", "sigstore")
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "bearer "+a.bearer)
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("requesting a GitHub Actions OIDC token: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized {
		return "", fmt.Errorf("%w (the token service answered %s)", ErrNoIDTokenPermission, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("requesting a GitHub Actions OIDC token: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var out struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Value == "" {
		return "", fmt.Errorf("the GitHub Actions token service returned no token")
	}
	return out.Value, nil
}
