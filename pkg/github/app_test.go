package github

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

// fakeGitHubApps checks App JWTs as GitHub does (RS256 by the App's public key, iss = app
// id, at most ten minutes of life, not expired) and serves the installation lookup and the
// access-token exchange with GitHub's response shapes.
func fakeGitHubApps(t *testing.T, pub *rsa.PublicKey, appID string, now time.Time) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := testutil.CheckAppJWT(r.Header.Get("Authorization"), pub, appID, now); err != nil {
			w.WriteHeader(401)
			json.NewEncoder(w).Encode(map[string]string{"message": err.Error(), "documentation_url": "https://docs.github.com/rest"})
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/api/v3/repos/acme/shop/installation":
			json.NewEncoder(w).Encode(map[string]any{"id": 4242, "app_id": 7, "target_type": "Organization", "account": map[string]any{"login": "acme"}})
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/installation"):
			w.WriteHeader(404)
			json.NewEncoder(w).Encode(map[string]string{"message": "Not Found"})
		case r.Method == http.MethodPost && r.URL.Path == "/api/v3/app/installations/4242/access_tokens":
			var in struct {
				Repositories []string `json:"repositories"`
			}
			json.NewDecoder(r.Body).Decode(&in)
			if len(in.Repositories) != 1 || in.Repositories[0] != "shop" {
				w.WriteHeader(422)
				json.NewEncoder(w).Encode(map[string]string{"message": "There is at least one repository that does not exist or is not accessible"})
				return
			}
			w.WriteHeader(201)
			json.NewEncoder(w).Encode(map[string]any{"token": "ghs_installation", "expires_at": now.Add(time.Hour).Format(time.RFC3339),
				"permissions": map[string]string{"contents": "write"}, "repository_selection": "selected"})
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL)
			w.WriteHeader(404)
		}
	}))
}

func TestInstallationToken(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	pkcs8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)})
	srv := fakeGitHubApps(t, &key.PublicKey, "7", now)
	defer srv.Close()
	clock := func() time.Time { return now }

	for _, tc := range []struct {
		name    string
		o       AppOptions
		wantErr string
	}{
		{"pkcs1 key, installation looked up", AppOptions{AppID: "7", PrivateKey: pkcs1, Repository: "acme/shop"}, ""},
		{"pkcs8 key, installation given", AppOptions{AppID: "7", PrivateKey: pkcs8, InstallationID: 4242, Repository: "acme/shop"}, ""},
		{"another key", AppOptions{AppID: "7", PrivateKey: otherPEM, Repository: "acme/shop"}, "401"},
		{"not installed", AppOptions{AppID: "7", PrivateKey: pkcs1, Repository: "acme/other"}, "is the App installed there?"},
		{"bad app id", AppOptions{AppID: "relay-app", PrivateKey: pkcs1, Repository: "acme/shop"}, "not a number"},
		{"not a key", AppOptions{AppID: "7", PrivateKey: []byte("ghp_notakey"), Repository: "acme/shop"}, "not PEM"},
		{"no repository", AppOptions{AppID: "7", PrivateKey: pkcs1}, "name the repository"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.BaseURL, tc.o.Now = srv.URL+"/api/v3/", clock
			tok, err := InstallationToken(context.Background(), tc.o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || tok.Value != "ghs_installation" || !tok.ExpiresAt.Equal(now.Add(time.Hour)) {
				t.Fatalf("%+v %v", tok, err)
			}
		})
	}
	// A clock far ahead of GitHub's makes an expired-looking JWT: GitHub's refusal surfaces.
	_, err := InstallationToken(context.Background(), AppOptions{AppID: "7", PrivateKey: pkcs1, Repository: "acme/shop", BaseURL: srv.URL + "/api/v3", Now: func() time.Time { return now.Add(-time.Hour) }})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("stale clock: %v", err)
	}
}
