package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// KeyVaultSecret reads a secret (the GitHub App's private key) from Azure Key Vault with
// cred, in practice the container's managed identity, so that no key is stored in the job's
// configuration. secretURL is https://VAULT.vault.azure.net/secrets/NAME[/VERSION].
func KeyVaultSecret(ctx context.Context, secretURL string, cred azcore.TokenCredential, hc *http.Client) ([]byte, error) {
	u, err := url.Parse(secretURL)
	if err != nil || u.Scheme != "https" || !strings.HasPrefix(u.Path, "/secrets/") {
		return nil, fmt.Errorf("Key Vault secret %q is not https://VAULT.vault.azure.net/secrets/NAME[/VERSION]", secretURL)
	}
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	if err != nil {
		return nil, fmt.Errorf("Key Vault: getting a token with the managed identity: %w (is an identity assigned to the job, and AZURE_CLIENT_ID set for a user-assigned one?)", err)
	}
	q := u.Query()
	q.Set("api-version", "7.4")
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second} // one small secret: never an unbounded wait
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Key Vault: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var out struct {
		Value string `json:"value"`
		Error struct {
			Code, Message string
		} `json:"error"`
	}
	json.Unmarshal(b, &out)
	switch {
	case resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("Key Vault: reading %s was refused (%s): grant the identity 'get' on secrets, or the Key Vault Secrets User role", u.Path, out.Error.Message)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("Key Vault: reading %s: %d %s %s", u.Path, resp.StatusCode, out.Error.Code, out.Error.Message)
	case out.Value == "":
		return nil, fmt.Errorf("Key Vault: secret %s is empty", u.Path)
	}
	return []byte(out.Value), nil
}
