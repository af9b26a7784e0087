package github

// A GitHub App's id and private key turn into an installation token: the credential relay
// uses instead of a long-lived personal access token, for releases and (in the runner and
// the listener) for registering runners.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/relaydev/relay/internal/httpx"
)

// AppOptions configure InstallationToken.
type AppOptions struct {
	AppID      string
	PrivateKey []byte // PEM, as GitHub issues it (PKCS#1) or PKCS#8
	// InstallationID skips the lookup; else the installation on Repository is used.
	InstallationID int64
	Repository     string // OWNER/NAME
	// Org finds the installation on an organization instead (runner registration at
	// organization scope); the token is then not limited to one repository.
	Org string
	// BaseURL is the REST API root: https://api.github.com (default) or https://HOST/api/v3.
	BaseURL string
	HTTP    *http.Client
	// Retrier is the retry layer HTTP already includes (see Options.Retrier).
	Retrier *httpx.Retrier
	Now     func() time.Time
}

// Token is an installation access token.
type Token struct {
	Value     string
	ExpiresAt time.Time
	// Permissions the token carries, as GitHub reports them (e.g. administration: write).
	Permissions map[string]string
}

// InstallationToken signs an App JWT (valid nine minutes, issued a minute in the past for
// clock drift) and exchanges it for an installation token limited to the repository.
func InstallationToken(ctx context.Context, o AppOptions) (*Token, error) {
	if o.AppID == "" || len(o.PrivateKey) == 0 {
		return nil, errors.New("GitHub App: the app id and its private key are both required")
	}
	if _, err := strconv.ParseInt(o.AppID, 10, 64); err != nil {
		return nil, fmt.Errorf("GitHub App id %q is not a number (it is on the App's settings page)", o.AppID)
	}
	key, err := parseKey(o.PrivateKey)
	if err != nil {
		return nil, err
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	jwt, err := appJWT(o.AppID, key, o.Now())
	if err != nil {
		return nil, err
	}
	c, err := New(Options{BaseURL: o.BaseURL, Token: Static(jwt), HTTP: o.HTTP, Retrier: o.Retrier})
	if err != nil {
		return nil, err
	}
	id := o.InstallationID
	if id == 0 {
		path, on := "/repos/"+o.Repository+"/installation", o.Repository
		if o.Org != "" {
			path, on = "/orgs/"+o.Org+"/installation", "organization "+o.Org
		} else if o.Repository == "" {
			return nil, errors.New("GitHub App: name the repository or organization (or the installation id) the token is for")
		}
		var inst struct {
			ID int64 `json:"id"`
		}
		if _, err := c.Do(ctx, http.MethodGet, path, nil, &inst); err != nil {
			return nil, fmt.Errorf("GitHub App %s: finding its installation on %s (is the App installed there?): %w", o.AppID, on, err)
		}
		id = inst.ID
	}
	var body any
	if o.Repository != "" && o.Org == "" {
		_, name, _ := strings.Cut(o.Repository, "/")
		body = map[string]any{"repositories": []string{name}}
	}
	var out struct {
		Token       string            `json:"token"`
		ExpiresAt   time.Time         `json:"expires_at"`
		Permissions map[string]string `json:"permissions"`
	}
	if _, err := c.Do(ctx, http.MethodPost, fmt.Sprintf("/app/installations/%d/access_tokens", id), body, &out); err != nil {
		return nil, fmt.Errorf("GitHub App %s: minting an installation token: %w", o.AppID, err)
	}
	if out.Token == "" {
		return nil, fmt.Errorf("GitHub App %s: GitHub returned no token", o.AppID)
	}
	return &Token{Value: out.Token, ExpiresAt: out.ExpiresAt, Permissions: out.Permissions}, nil
}

// CheckCredentials checks, without any request, that appID is an App id and key an App's
// private key: wrong ones are a deployment's mistake that no retry fixes.
func CheckCredentials(appID string, key []byte) error {
	if n, err := strconv.ParseInt(appID, 10, 64); err != nil || n <= 0 {
		return fmt.Errorf("RELAY_GITHUB_APP_ID %q is not a GitHub App id: use the number on the App's settings page", appID)
	}
	_, err := parseKey(key)
	return err
}

func parseKey(b []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("GitHub App private key is not PEM: use the .pem file GitHub generated")
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("GitHub App private key: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("GitHub App private key is a %T; GitHub Apps use RSA keys", k)
	}
	return rk, nil
}

func appJWT(appID string, key *rsa.PrivateKey, now time.Time) (string, error) {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." +
		enc(map[string]any{"iat": now.Add(-time.Minute).Unix(), "exp": now.Add(9 * time.Minute).Unix(), "iss": appID})
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
