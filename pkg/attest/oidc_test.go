package attest

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenSourceFromEnv(t *testing.T) {
	// A GitHub Actions token service: the bearer and the audience are what GitHub checks.
	actions := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") == "bearer no-permission":
			http.Error(w, `{"message":"Can't issue ID_TOKEN for audience 'sigstore'"}`, http.StatusForbidden)
		case r.Header.Get("Authorization") != "bearer req-token" || r.URL.Query().Get("audience") != "sigstore" || r.URL.Query().Get("api-version") != "2.0":
			http.Error(w, "bad request", http.StatusBadRequest)
		default:
			w.Write([]byte(`{"count":1,"value":"actions-jwt"}`))
		}
	}))
	defer actions.Close()
	file := filepath.Join(t.TempDir(), "token")

	for _, tc := range []struct {
		name    string
		env     map[string]string
		file    string
		want    string
		wantErr string
	}{
		{"github actions", map[string]string{"ACTIONS_ID_TOKEN_REQUEST_URL": actions.URL + "/token?api-version=2.0", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "req-token"}, "", "actions-jwt", ""},
		{"github actions without id-token: write", map[string]string{"GITHUB_ACTIONS": "true"}, "", "", "permissions: id-token: write"},
		{"token service refuses", map[string]string{"ACTIONS_ID_TOKEN_REQUEST_URL": actions.URL + "/token?api-version=2.0", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "no-permission"}, "", "", "permissions: id-token: write"},
		{"SIGSTORE_ID_TOKEN", map[string]string{"SIGSTORE_ID_TOKEN": "handed-in", "ACTIONS_ID_TOKEN_REQUEST_URL": actions.URL, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "req-token"}, "", "handed-in", ""},
		{"token file wins", map[string]string{"SIGSTORE_ID_TOKEN": "handed-in"}, file, "from-file", ""},
		{"nothing", map[string]string{}, "", "", "SIGSTORE_ID_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(file, []byte("from-file\n"), 0o600)
			ts, err := TokenSourceFromEnv(func(k string) string { return tc.env[k] }, tc.file, nil)
			var tok string
			if err == nil {
				tok, err = ts.Token(context.Background())
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || tok != tc.want {
				t.Fatalf("token %q, %v; want %q", tok, err, tc.want)
			}
		})
	}
}

// TestTokenFileIsReadEachTime: projected Kubernetes tokens rotate under the same path.
func TestTokenFileIsReadEachTime(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	ts, _ := TokenSourceFromEnv(func(string) string { return "" }, file, nil)
	if _, err := ts.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "token file") && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	for _, want := range []string{"first", "rotated"} {
		os.WriteFile(file, []byte(want), 0o600)
		if got, err := ts.Token(context.Background()); err != nil || got != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	os.WriteFile(file, nil, 0o600)
	if _, err := ts.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
}

func TestPrivateRepositoryError(t *testing.T) {
	jwt := func(claims string) string {
		return "e30." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".sig"
	}
	for _, tc := range []struct {
		token   string
		refused bool
	}{
		{jwt(`{"repository":"acme/secret","repository_visibility":"private"}`), true},
		{jwt(`{"repository":"acme/inner","repository_visibility":"internal"}`), true},
		{jwt(`{"repository":"acme/shop","repository_visibility":"public"}`), false},
		{jwt(`{"email":"bot@example.com"}`), false}, // not a GitHub token: nothing to go by
		{"not-a-jwt", false},
	} {
		err := PrivateRepositoryError(tc.token)
		if (err != nil) != tc.refused {
			t.Errorf("%s: %v", tc.token, err)
		}
		if err != nil && (!errors.Is(err, ErrPrivateRepository) || !strings.Contains(err.Error(), "signing.allow_public_log")) {
			t.Errorf("the refusal does not say how to proceed: %v", err)
		}
	}
}
