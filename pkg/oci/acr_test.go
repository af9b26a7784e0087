package oci

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// fakeAzure serves a managed-identity token endpoint (IMDS or Container Apps style) and
// ACR's /oauth2/exchange, checking what Azure checks.
type fakeAzure struct {
	mu                sync.Mutex
	tokenCalls, exchs int
	exchangeStatus    int
}

func (f *fakeAzure) handler(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case r.URL.Path == "/imds":
			f.tokenCalls++
			if r.Header.Get("Metadata") != "true" || r.URL.Query().Get("resource") != "https://management.azure.com/" {
				http.Error(w, "bad IMDS request", http.StatusBadRequest)
				return
			}
			w.Write([]byte(`{"access_token":"aad-token","expires_on":"` + "4102444800" + `"}`))
		case r.URL.Path == "/msi":
			f.tokenCalls++
			if r.Header.Get("X-IDENTITY-HEADER") != "hdr-secret" || r.URL.Query().Get("client_id") != "cid-1" {
				http.Error(w, "bad identity request", http.StatusBadRequest)
				return
			}
			w.Write([]byte(`{"access_token":"aad-token","expires_on":4102444800}`))
		case strings.HasSuffix(r.URL.Path, "/oauth2/exchange"):
			f.exchs++
			if f.exchangeStatus != 0 {
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, f.exchangeStatus)
				return
			}
			r.ParseForm()
			if r.Form.Get("grant_type") != "access_token" || r.Form.Get("access_token") != "aad-token" || !strings.HasSuffix(r.Form.Get("service"), ".azurecr.io") {
				http.Error(w, "bad exchange", http.StatusBadRequest)
				return
			}
			w.Write([]byte(`{"refresh_token":"acr-refresh-` + r.Form.Get("service") + `"}`))
		default:
			t.Errorf("unexpected request %s", r.URL)
		}
	})
}

func TestACRKeychain(t *testing.T) {
	f := &fakeAzure{}
	srv := httptest.NewServer(f.handler(t))
	defer srv.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exchange := func(r string) string { return srv.URL + "/" + r + "/oauth2/exchange" }
	for _, tt := range []struct {
		name string
		o    ACROptions
	}{
		{"imds", ACROptions{IMDSEndpoint: srv.URL + "/imds"}},
		{"container apps", ACROptions{IdentityEndpoint: srv.URL + "/msi", IdentityHeader: "hdr-secret", ClientID: "cid-1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f.tokenCalls, f.exchs = 0, 0
			tt.o.ExchangeURL, tt.o.Now = exchange, func() time.Time { return now }
			kc := ACRKeychain(tt.o)
			for _, host := range []string{"a.azurecr.io", "a.azurecr.io", "b.azurecr.io"} {
				r, _ := name.NewRepository(host + "/app")
				a, err := kc.Resolve(r)
				if err != nil {
					t.Fatal(err)
				}
				cfg, _ := a.Authorization()
				if cfg.Username != acrUser || cfg.Password != "acr-refresh-"+host {
					t.Fatalf("%s: %+v", host, cfg)
				}
			}
			// One identity token for the run; one exchange per registry.
			if f.tokenCalls != 1 || f.exchs != 2 {
				t.Fatalf("token calls %d, exchanges %d", f.tokenCalls, f.exchs)
			}
			other, _ := name.NewRepository("ghcr.io/acme/app")
			if a, _ := kc.Resolve(other); a != authn.Anonymous {
				t.Fatal("a non-ACR host got ACR credentials")
			}
		})
	}
	f.exchangeStatus = http.StatusUnauthorized
	kc := ACRKeychain(ACROptions{IMDSEndpoint: srv.URL + "/imds", ExchangeURL: exchange})
	r, _ := name.NewRepository("c.azurecr.io/app")
	if _, err := kc.Resolve(r); err == nil || !strings.Contains(err.Error(), "c.azurecr.io") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("refused exchange: %v", err)
	}
}
