package oci

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// ACROptions configure ACRKeychain. Endpoints default to Azure's; tests point them at
// loopback servers.
type ACROptions struct {
	// IdentityEndpoint and IdentityHeader are set by Container Apps and App Service for the
	// managed identity (IDENTITY_ENDPOINT, IDENTITY_HEADER). Empty: use IMDS.
	IdentityEndpoint string
	IdentityHeader   string
	// IMDSEndpoint is the instance metadata token endpoint (VMs, AKS nodes).
	IMDSEndpoint string
	// ClientID picks a user-assigned identity (AZURE_CLIENT_ID); empty: the system identity.
	ClientID string
	// ExchangeURL returns the ACR token-exchange URL of a registry.
	ExchangeURL func(registry string) string
	HTTP        *http.Client
	Now         func() time.Time
}

// acrUser is the user name ACR expects with a refresh token from /oauth2/exchange.
const acrUser = "00000000-0000-0000-0000-000000000000"

// ACRKeychain gives *.azurecr.io registries credentials from the workload's managed
// identity: an Azure AD token exchanged for an ACR refresh token. No SDK, no stored secret.
func ACRKeychain(o ACROptions) authn.Keychain {
	if o.IMDSEndpoint == "" {
		o.IMDSEndpoint = "http://169.254.169.254/metadata/identity/oauth2/token"
	}
	if o.ExchangeURL == nil {
		o.ExchangeURL = func(r string) string { return "https://" + r + "/oauth2/exchange" }
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &acrKeychain{o: o, refresh: map[string]cached{}}
}

type cached struct {
	value   string
	expires time.Time
}

type acrKeychain struct {
	o       ACROptions
	mu      sync.Mutex
	aad     cached
	refresh map[string]cached
}

// IsACR reports whether host is an Azure Container Registry.
func IsACR(host string) bool {
	for _, s := range []string{".azurecr.io", ".azurecr.cn", ".azurecr.us", ".azurecr.de"} {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

func (k *acrKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), r) // only for callers without a ctx, as ggcr's own keychains
}

// ResolveContext implements authn.ContextKeychain: the token exchanges run under ctx.
func (k *acrKeychain) ResolveContext(ctx context.Context, r authn.Resource) (authn.Authenticator, error) {
	host := r.RegistryStr()
	if !IsACR(host) {
		return authn.Anonymous, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.o.Now()
	if c, ok := k.refresh[host]; ok && now.Before(c.expires) {
		return &authn.Basic{Username: acrUser, Password: c.value}, nil
	}
	if !now.Before(k.aad.expires) {
		tok, exp, err := k.aadToken(ctx)
		if err != nil {
			return nil, fmt.Errorf("ACR %s: managed identity token: %w", host, err)
		}
		k.aad = cached{value: tok, expires: exp}
	}
	rt, err := k.exchange(ctx, host, k.aad.value)
	if err != nil {
		return nil, fmt.Errorf("ACR %s: exchanging the Azure AD token: %w", host, err)
	}
	// ACR refresh tokens live about three hours; renew well before.
	k.refresh[host] = cached{value: rt, expires: now.Add(time.Hour)}
	return &authn.Basic{Username: acrUser, Password: rt}, nil
}

func (k *acrKeychain) aadToken(ctx context.Context) (string, time.Time, error) {
	const resource = "https://management.azure.com/"
	var req *http.Request
	var err error
	if k.o.IdentityEndpoint != "" {
		q := url.Values{"api-version": {"2019-08-01"}, "resource": {resource}}
		if k.o.ClientID != "" {
			q.Set("client_id", k.o.ClientID)
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, k.o.IdentityEndpoint+"?"+q.Encode(), nil)
		if err == nil {
			req.Header.Set("X-IDENTITY-HEADER", k.o.IdentityHeader)
		}
	} else {
		q := url.Values{"api-version": {"2018-02-01"}, "resource": {resource}}
		if k.o.ClientID != "" {
			q.Set("client_id", k.o.ClientID)
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, k.o.IMDSEndpoint+"?"+q.Encode(), nil)
		if err == nil {
			req.Header.Set("Metadata", "true")
		}
	}
	if err != nil {
		return "", time.Time{}, err
	}
	var body struct {
		AccessToken string      `json:"access_token"`
		ExpiresOn   json.Number `json:"expires_on"`
	}
	if err := k.doJSON(req, &body); err != nil {
		return "", time.Time{}, err
	}
	if body.AccessToken == "" {
		return "", time.Time{}, fmt.Errorf("the identity endpoint returned no access_token")
	}
	exp := k.o.Now().Add(5 * time.Minute)
	if n, err := body.ExpiresOn.Int64(); err == nil && n > 0 {
		exp = time.Unix(n, 0).Add(-5 * time.Minute)
	}
	return body.AccessToken, exp, nil
}

func (k *acrKeychain) exchange(ctx context.Context, host, aad string) (string, error) {
	form := url.Values{"grant_type": {"access_token"}, "service": {host}, "access_token": {aad}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.o.ExchangeURL(host), strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var body struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := k.doJSON(req, &body); err != nil {
		return "", err
	}
	if body.RefreshToken == "" {
		return "", fmt.Errorf("the registry returned no refresh_token")
	}
	return body.RefreshToken, nil
}

func (k *acrKeychain) doJSON(req *http.Request, v any) error {
	resp, err := k.o.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Redacted(), resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, v)
}
