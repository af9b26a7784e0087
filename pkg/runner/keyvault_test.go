package runner

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// The App key comes from Key Vault with a token of the container's managed identity (the
// Container Apps identity endpoint, through azidentity), never from the job's config.
func TestKeyVaultSecret(t *testing.T) {
	identity := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-IDENTITY-HEADER") != "id-header" || r.URL.Query().Get("resource") != "https://vault.azure.net" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"access_token": "mi-token", "token_type": "Bearer", "expires_on": "4102444800", "resource": "https://vault.azure.net"})
	}))
	defer identity.Close()
	vault := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") != "Bearer mi-token":
			w.WriteHeader(http.StatusUnauthorized)
		case r.URL.Path == "/secrets/runner-app" && r.URL.Query().Get("api-version") != "":
			json.NewEncoder(w).Encode(map[string]any{"value": "-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----\n", "id": "https://kv/secrets/runner-app/1"})
		case r.URL.Path == "/secrets/forbidden":
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "Forbidden", "message": "Caller is not authorized to perform action on resource."}})
		default:
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "SecretNotFound", "message": "A secret with (name/id) x was not found in this key vault."}})
		}
	}))
	defer vault.Close()
	t.Setenv("IDENTITY_ENDPOINT", identity.URL)
	t.Setenv("IDENTITY_HEADER", "id-header")
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, err := KeyVaultSecret(ctx, vault.URL+"/secrets/runner-app", cred, vault.Client())
	if err != nil || !strings.Contains(string(key), "BEGIN RSA PRIVATE KEY") {
		t.Fatalf("secret: %q %v", key, err)
	}
	for _, tc := range []struct{ url, want string }{
		{vault.URL + "/secrets/forbidden", "grant the identity 'get' on secrets"},
		{vault.URL + "/secrets/missing", "SecretNotFound"},
		{"http://kv.example/secrets/x", "is not https://"},
		{vault.URL + "/keys/x", "is not https://"},
	} {
		if _, err := KeyVaultSecret(ctx, tc.url, cred, vault.Client()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.url, err)
		}
	}
	if _, err := KeyVaultSecret(ctx, vault.URL+"/secrets/runner-app", failingCred{}, vault.Client()); err == nil || !strings.Contains(err.Error(), "managed identity") {
		t.Errorf("no identity: %v", err)
	}
}

type failingCred struct{}

func (failingCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, context.DeadlineExceeded
}
