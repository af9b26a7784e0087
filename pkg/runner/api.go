package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// api is the part of GitHub's REST API a runner needs.
type api struct {
	o *Options
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
	tok, err := a.o.Token(ctx)
	if err != nil {
		return fmt.Errorf("GitHub API token: %w", err)
	}
	a.o.secret(tok)
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.o.APIURL+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("User-Agent", "relay-runner")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.o.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("GitHub API: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	for _, w := range want {
		if resp.StatusCode == w {
			if out != nil && len(b) > 0 {
				if err := json.Unmarshal(b, out); err != nil {
					return fmt.Errorf("GitHub API: %s %s: %w", method, path, err)
				}
			}
			return nil
		}
	}
	var e struct {
		Message string `json:"message"`
	}
	json.Unmarshal(b, &e)
	return &apiError{Status: resp.StatusCode, Message: e.Message, Op: method + " " + path}
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
