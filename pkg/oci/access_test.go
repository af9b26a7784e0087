package oci

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// TestAccessErrors: a registry refusing a push or a pull is an AccessError naming the
// registry, the repository, the access and the fix, in words, never a printed Go map.
func TestAccessErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.HasPrefix(r.URL.Path, "/v2/private/"):
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"private/app","Action":"pull"}]}]}`))
		case r.Method == http.MethodHead || r.Method == http.MethodGet:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`))
		default:
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"errors":[{"code":"DENIED","message":"permission_denied: write_package","detail":{"Type":"repository","Name":"acme/app","Action":"push"}}]}`))
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	c := newClient(t)
	img, _ := random.Image(64, 1)

	_, err := c.Write(ctx, mustRepo(t, host+"/acme/app"), img)
	var ae *AccessError
	if err = ExplainAccess(err); !errors.As(err, &ae) {
		t.Fatalf("push: %v", err)
	}
	if !ae.Push || ae.Status != 403 || ae.Registry != host || ae.Repository != host+"/acme/app" || !ae.PermanentInput() {
		t.Fatalf("push: %+v", ae)
	}
	for _, want := range []string{host + " denied push access: relay may not push to " + host + "/acme/app", "permission_denied: write_package", "fix: sign in with an account that has write access to " + host + "/acme/app", "docker login " + host} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("push error lacks %q: %s", want, err)
		}
	}

	_, err = c.Resolve(ctx, mustRepo(t, host+"/private/app").Tag("v1"))
	if err = ExplainAccess(err); !errors.As(err, &ae) || ae.Push || ae.Status != 401 || !strings.Contains(err.Error(), "rejected relay's credentials: relay may not read "+host+"/private/app") ||
		!strings.Contains(err.Error(), "read access") {
		t.Fatalf("pull: %v", err)
	}
	for _, e := range []error{err, ExplainAccess(err)} {
		if strings.Contains(e.Error(), "map[") || strings.Contains(e.Error(), "Type:repository") {
			t.Errorf("a Go map was printed: %s", e)
		}
	}
	// Anything else passes through.
	other := errors.New("connection refused")
	if ExplainAccess(other) != other || ExplainAccess(nil) != nil {
		t.Fatal("ExplainAccess changed another error")
	}
}

func TestAccessFixes(t *testing.T) {
	for _, tc := range []struct {
		host string
		push bool
		want string
	}{
		{"ghcr.io", true, "permissions: packages: write"},
		{"ghcr.io", false, "packages: read"},
		{"acme.azurecr.io", true, "AcrPush role"},
		{"acme.azurecr.io", false, "AcrPull role"},
		{"docker.io", true, "DOCKERHUB_USERNAME and DOCKERHUB_TOKEN to an access token with Read & Write"},
		{"europe-docker.pkg.dev", true, "roles/artifactregistry.writer"},
		{"gcr.io", false, "roles/artifactregistry.reader"},
		{"123456789012.dkr.ecr.eu-west-1.amazonaws.com", true, "ecr:PutImage"},
		{"registry.internal:5000", false, "docker login registry.internal:5000"},
	} {
		if got := accessFix(tc.host, tc.host+"/acme/app", tc.push); !strings.Contains(got, tc.want) {
			t.Errorf("%s push=%v: %q lacks %q", tc.host, tc.push, got, tc.want)
		}
	}
}
