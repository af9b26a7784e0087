package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/pkg/github"
)

// api is the part of GitHub's REST API a runner needs, through relay's GitHub client.
type api struct {
	o *Options
	c *github.Client
}

func newAPI(o *Options) (api, error) {
	tokens := o.Token
	if tokens == nil {
		tokens = func(context.Context) (string, error) {
			return "", errors.New("no API credential: this runner was handed a registration token only")
		}
	}
	c, err := github.New(github.Options{BaseURL: o.APIURL, HTTP: o.HTTP, Retrier: o.Retrier, Token: func(ctx context.Context) (string, error) {
		tok, err := tokens(ctx)
		if err != nil {
			return "", fmt.Errorf("GitHub API token: %w", err)
		}
		o.secret(tok)
		return tok, nil
	}})
	return api{o: o, c: c}, err
}

// apiError is a GitHub REST error with its status.
type apiError struct {
	Status  int
	Message string
	Op      string
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("GitHub API: %s: %d %s", e.Op, e.Status, e.Message)
	switch e.Status {
	case http.StatusUnauthorized:
		msg += " (the token was rejected: check the App id and key, or that the token has not expired)"
	case http.StatusForbidden:
		msg += " (the credential may not manage runners here: a GitHub App needs Administration: write on the repository, or Self-hosted runners: write on the organization; enterprise runners need a token with manage_runners:enterprise)"
	}
	return msg
}

func (a api) do(ctx context.Context, method, path string, body, out any, want ...int) error {
	resp, err := a.c.Do(ctx, method, path, body, out)
	var te *github.TokenError
	var ge *github.Error
	switch {
	case errors.As(err, &te):
		return te.Err
	case errors.As(err, &ge):
		return &apiError{Status: ge.Status, Message: ge.Message, Op: method + " " + path}
	case err != nil:
		return fmt.Errorf("GitHub API: %s %s: %w", method, path, err)
	case !slices.Contains(want, resp.Status):
		return &apiError{Status: resp.Status, Message: "unexpected answer", Op: method + " " + path}
	}
	return nil
}

type apiRunner struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Busy   bool   `json:"busy"`
}

// jit asks for a just-in-time config; errNoJIT means the server has no such endpoint.
func (a api) jit(ctx context.Context, name string) (apiRunner, string, error) {
	var out struct {
		Runner apiRunner `json:"runner"`
		Config string    `json:"encoded_jit_config"`
	}
	err := a.do(ctx, http.MethodPost, a.o.Scope.apiPath()+"/actions/runners/generate-jitconfig", map[string]any{
		"name": name, "runner_group_id": a.o.GroupID, "labels": a.o.Labels, "work_folder": a.o.WorkFolder,
	}, &out, http.StatusCreated)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return apiRunner{}, "", errNoJIT
	}
	if err == nil && out.Config == "" {
		err = errors.New("GitHub API: generate-jitconfig returned no config")
	}
	return out.Runner, out.Config, err
}

var errNoJIT = errors.New("no just-in-time runner configuration on this server")

func (a api) registrationToken(ctx context.Context) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	if err := a.do(ctx, http.MethodPost, a.o.Scope.apiPath()+"/actions/runners/registration-token", nil, &out, http.StatusCreated); err != nil {
		return "", err
	}
	return out.Token, nil
}

func (a api) list(ctx context.Context, name string) ([]apiRunner, error) {
	var all []apiRunner
	for page := 1; ; page++ {
		q := url.Values{"per_page": {"100"}, "page": {fmt.Sprint(page)}}
		if name != "" {
			q.Set("name", name)
		}
		var out struct {
			Total   int         `json:"total_count"`
			Runners []apiRunner `json:"runners"`
		}
		if err := a.do(ctx, http.MethodGet, a.o.Scope.apiPath()+"/actions/runners?"+q.Encode(), nil, &out, http.StatusOK); err != nil {
			return nil, err
		}
		all = append(all, out.Runners...)
		if len(out.Runners) < 100 || len(all) >= out.Total {
			return all, nil
		}
	}
}

// remove deletes a registration; it reports whether one existed.
func (a api) remove(ctx context.Context, id int64) (bool, error) {
	err := a.do(ctx, http.MethodDelete, fmt.Sprintf("%s/actions/runners/%d", a.o.Scope.apiPath(), id), nil, nil, http.StatusNoContent)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}

// nameLayout timestamps runner names, so that a later replica can tell an orphan (offline
// and old) from a runner that registered a moment ago and is still connecting.
const nameLayout = "20060102150405"

func runnerName(prefix string, now time.Time, suffix string) string {
	return prefix + "-" + now.UTC().Format(nameLayout) + "-" + suffix
}

// nameTime reads the registration time out of a name made by runnerName.
func nameTime(prefix, name string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok || len(rest) < len(nameLayout)+1 {
		return time.Time{}, false
	}
	t, err := time.Parse(nameLayout, rest[:len(nameLayout)])
	return t, err == nil && rest[len(nameLayout)] == '-'
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// RegistrationToken mints a runner registration token for the scope with token (an App
// installation token): relay listener exchanges it for the scale set service's admin token.
func RegistrationToken(ctx context.Context, scope Scope, apiURL string, token TokenFunc, hc *http.Client, retrier *httpx.Retrier) (string, error) {
	if err := scope.validate(); err != nil {
		return "", err
	}
	if apiURL == "" {
		apiURL = "https://api.github.com"
	}
	a, err := newAPI(&Options{Scope: scope, APIURL: strings.TrimRight(apiURL, "/"), Token: token, HTTP: hc, Retrier: retrier})
	if err != nil {
		return "", err
	}
	return a.registrationToken(ctx)
}
