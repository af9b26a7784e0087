package wire

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"cloud.google.com/go/compute/metadata"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

const cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

// googleTokens are application default credentials whose every request goes through hc
// (relay's chain): a key file or gcloud's credentials (GOOGLE_APPLICATION_CREDENTIALS,
// workload identity federation) exchanged through it, else the metadata server (GKE
// workload identity, Cloud Run, GCE) asked through it, which google.FindDefaultCredentials
// would ask with a client of its own.
func googleTokens(ctx context.Context, hc *http.Client, getenv func(string) string) (oauth2.TokenSource, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	if getenv("GOOGLE_APPLICATION_CREDENTIALS") != "" || fileExists(gcloudCredentials(getenv)) {
		creds, err := google.FindDefaultCredentials(ctx, cloudPlatformScope)
		if err != nil {
			return nil, err
		}
		return creds.TokenSource, nil
	}
	mc := metadata.NewClient(hc)
	if !mc.OnGCEWithContext(ctx) {
		return nil, fmt.Errorf("no GOOGLE_APPLICATION_CREDENTIALS, no gcloud credentials, and no metadata server answers")
	}
	return oauth2.ReuseTokenSource(nil, &metadataTokens{ctx: ctx, c: mc}), nil
}

// gcloudCredentials is where `gcloud auth application-default login` writes.
func gcloudCredentials(getenv func(string) string) string {
	if d := getenv("CLOUDSDK_CONFIG"); d != "" {
		return filepath.Join(d, "application_default_credentials.json")
	}
	home := getenv("HOME")
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".config", "gcloud", "application_default_credentials.json")
}

func fileExists(p string) bool {
	if p == "" {
		return false
	}
	_, err := os.Stat(p)
	return err == nil
}

// metadataTokens are the default service account's tokens from the metadata server.
type metadataTokens struct {
	ctx context.Context // the run's: tokens are asked for from a TokenSource, which takes none
	c   *metadata.Client
}

func (m *metadataTokens) Token() (*oauth2.Token, error) {
	body, err := m.c.GetWithContext(m.ctx, "instance/service-accounts/default/token?scopes="+url.QueryEscape(cloudPlatformScope))
	if err != nil {
		return nil, fmt.Errorf("metadata server token: %w", err)
	}
	var t struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal([]byte(body), &t); err != nil || t.AccessToken == "" {
		return nil, fmt.Errorf("metadata server token: not a token answer (%v)", err)
	}
	return &oauth2.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: time.Now().Add(time.Duration(t.ExpiresIn) * time.Second)}, nil
}
