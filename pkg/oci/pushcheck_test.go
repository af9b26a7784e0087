package oci

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

type staticKeychain struct{ user, pass string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	if k.user == "" {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

// tokenRegistry answers /v2/ with a bearer challenge and hands out unsigned JWTs whose
// access claim grants what the user may do: writer pull,push, reader pull, anonymous pull.
func tokenRegistry(t *testing.T) *httptest.Server {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="registry.test"`)
			w.WriteHeader(http.StatusUnauthorized)
		case "/token":
			user, pass, _ := r.BasicAuth()
			if user != "" && pass != "right" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			scope := strings.Split(r.URL.Query().Get("scope"), ":")
			actions := map[string][]string{"writer": {"pull", "push"}, "reader": {"pull"}, "": {"pull"}}[user]
			claims, _ := json.Marshal(map[string]any{"iss": "registry.test", "access": []map[string]any{{"type": "repository", "name": scope[1], "actions": actions}}})
			enc := base64.RawURLEncoding.EncodeToString
			json.NewEncoder(w).Encode(map[string]string{"token": enc([]byte(`{"alg":"none"}`)) + "." + enc(claims) + ".c2ln"})
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func basicRegistry(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "ci" || p != "right" {
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPushAccess(t *testing.T) {
	tok, basic, open := tokenRegistry(t), basicRegistry(t), newRegistry(t, true)
	for _, tc := range []struct {
		name, host string
		kc         staticKeychain
		want       string // in the note, or in the error when fail
		fail       bool
	}{
		{"open registry", open, staticKeychain{}, "no credentials", false},
		{"token: writer", strings.TrimPrefix(tok.URL, "http://"), staticKeychain{"writer", "right"}, "push granted on acme/app", false},
		{"token: reader", strings.TrimPrefix(tok.URL, "http://"), staticKeychain{"reader", "right"}, "may only pull on acme/app, not push", true},
		{"token: anonymous", strings.TrimPrefix(tok.URL, "http://"), staticKeychain{}, "no credentials for", true},
		{"token: wrong password", strings.TrimPrefix(tok.URL, "http://"), staticKeychain{"writer", "wrong"}, "refused pull,push", true},
		{"basic: right", strings.TrimPrefix(basic.URL, "http://"), staticKeychain{"ci", "right"}, "basic credentials accepted", false},
		{"basic: wrong", strings.TrimPrefix(basic.URL, "http://"), staticKeychain{"ci", "wrong"}, "refused the credentials for ci", true},
		{"basic: none", strings.TrimPrefix(basic.URL, "http://"), staticKeychain{}, "has none for it", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(WithKeychain(tc.kc))
			if err != nil {
				t.Fatal(err)
			}
			repo, _ := name.NewRepository(tc.host + "/acme/app")
			note, err := c.PushAccess(t.Context(), repo)
			got := note
			if err != nil {
				got = err.Error()
			}
			if (err != nil) != tc.fail || !strings.Contains(got, tc.want) {
				t.Fatalf("note %q, err %v; want fail=%v with %q", note, err, tc.fail, tc.want)
			}
		})
	}
}
