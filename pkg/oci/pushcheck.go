package oci

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// PushAccess says whether the credentials relay has for repo may push there, without
// writing anything: a token registry is asked for a pull,push token for the repository and
// what it granted is read from the token's access claim. It returns a note for the report,
// or an error that names what is missing.
func (c *Client) PushAccess(ctx context.Context, repo name.Repository) (string, error) {
	base := fmt.Sprintf("%s://%s/v2/", repo.Registry.Scheme(), repo.RegistryStr())
	resp, err := c.plainGet(ctx, base, nil)
	if err != nil {
		return "", fmt.Errorf("%s: %w", repo.RegistryStr(), err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return "the registry asks for no credentials", nil
	}
	if resp.StatusCode != http.StatusUnauthorized {
		return "", fmt.Errorf("%s answered %d to /v2/", repo.RegistryStr(), resp.StatusCode)
	}
	auth, err := authn.Resolve(ctx, c.kc, repo.Registry)
	if err != nil {
		return "", fmt.Errorf("credentials for %s: %w", repo.RegistryStr(), err)
	}
	cfg, err := auth.Authorization()
	if err != nil {
		return "", fmt.Errorf("credentials for %s: %w", repo.RegistryStr(), err)
	}
	scheme, params := parseChallenge(resp.Header.Get("WWW-Authenticate"))
	switch strings.ToLower(scheme) {
	case "basic":
		if cfg.Username == "" {
			return "", fmt.Errorf("%s wants a username and password and relay has none for it (docker login, or the registry's environment variables)", repo.RegistryStr())
		}
		r, err := c.plainGet(ctx, base, func(req *http.Request) { req.SetBasicAuth(cfg.Username, cfg.Password) })
		if err != nil {
			return "", err
		}
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s refused the credentials for %s (%d)", repo.RegistryStr(), cfg.Username, r.StatusCode)
		}
		return "basic credentials accepted (the registry does not scope push rights further)", nil
	case "bearer":
	default:
		return "", fmt.Errorf("%s asks for %q authentication, which relay does not speak", repo.RegistryStr(), scheme)
	}
	u, err := url.Parse(params["realm"])
	if err != nil || params["realm"] == "" {
		return "", fmt.Errorf("%s: token challenge without a realm", repo.RegistryStr())
	}
	q := u.Query()
	if params["service"] != "" {
		q.Set("service", params["service"])
	}
	q.Set("scope", repo.Scope("pull,push"))
	u.RawQuery = q.Encode()
	r, err := c.plainGet(ctx, u.String(), func(req *http.Request) {
		switch {
		case cfg.RegistryToken != "":
			req.Header.Set("Authorization", "Bearer "+cfg.RegistryToken)
		case cfg.IdentityToken != "" || cfg.Username != "":
			user, pass := cfg.Username, cfg.Password
			if cfg.IdentityToken != "" {
				user, pass = "<token>", cfg.IdentityToken
			}
			req.SetBasicAuth(user, pass)
		}
	})
	if err != nil {
		return "", err
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if r.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s's token service refused pull,push on %s (%d): check the credentials and their rights on the repository", repo.RegistryStr(), repo.RepositoryStr(), r.StatusCode)
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal(b, &tok)
	t := tok.Token
	if t == "" {
		t = tok.AccessToken
	}
	actions, ok := jwtActions(t, repo.RepositoryStr())
	switch {
	case !ok:
		return "token granted for pull,push (an opaque token: the registry decides at push time)", nil
	case slices.Contains(actions, "push") || slices.Contains(actions, "*"):
		return "push granted on " + repo.RepositoryStr(), nil
	case *cfg == (authn.AuthConfig{}):
		return "", fmt.Errorf("no credentials for %s: anonymous access may only %s on %s (docker login, or the registry's environment variables; docs/cli.md)", repo.RegistryStr(), strings.Join(actions, ","), repo.RepositoryStr())
	default:
		return "", fmt.Errorf("the credentials for %s may only %s on %s, not push: grant write access to the repository", repo.RegistryStr(), orNothing(actions), repo.RepositoryStr())
	}
}

func orNothing(a []string) string {
	if len(a) == 0 {
		return "do nothing"
	}
	return strings.Join(a, ",")
}

func (c *Client) plainGet(ctx context.Context, u string, edit func(*http.Request)) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", c.ua)
	if edit != nil {
		edit(req)
	}
	return (&http.Client{Transport: c.rt}).Do(req)
}

var reParam = regexp.MustCompile(`(\w+)="([^"]*)"`)

// parseChallenge reads a WWW-Authenticate header: the scheme and its quoted parameters.
func parseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for _, m := range reParam.FindAllStringSubmatch(rest, -1) {
		params[strings.ToLower(m[1])] = m[2]
	}
	return scheme, params
}

// jwtActions reads the actions a registry token grants on a repository (the "access" claim
// of distribution's token spec); ok is false when the token is not a readable JWT.
func jwtActions(tok, repository string) ([]string, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, false
	}
	var claims struct {
		Access []struct {
			Type    string   `json:"type"`
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
		} `json:"access"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return nil, false
	}
	var out []string
	for _, a := range claims.Access {
		if a.Type == "repository" && a.Name == repository {
			out = append(out, a.Actions...)
		}
	}
	return out, true
}
