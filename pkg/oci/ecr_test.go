package oci

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/relaydev/relay/internal/testutil"
)

// fakeECR serves the container credentials endpoint (what ECS, Fargate and CodeBuild give a
// task) and ECR's GetAuthorizationToken, which re-signs each request with the credentials
// it handed out and accepts only a matching SigV4 signature.
type fakeECR struct {
	mu        sync.Mutex
	credCalls int
	calls     int
	regions   []string
	deny      bool
	expiresAt time.Time
}

const (
	fakeKeyID  = "ASIAFAKEKEY"
	fakeSecret = "fake-secret"
	fakeToken  = "fake-session"
)

func (f *fakeECR) handler(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.URL.Path == "/creds" {
			f.credCalls++
			if r.Header.Get("Authorization") != "task-auth" {
				http.Error(w, "no", http.StatusUnauthorized)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{
				"AccessKeyId": fakeKeyID, "SecretAccessKey": fakeSecret, "Token": fakeToken,
				"Expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			})
			return
		}
		f.calls++
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Amz-Target") != "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken" {
			http.Error(w, "unknown target "+r.Header.Get("X-Amz-Target"), http.StatusBadRequest)
			return
		}
		region, err := testutil.CheckSigV4(r, body, "ecr", aws.Credentials{AccessKeyID: fakeKeyID, SecretAccessKey: fakeSecret, SessionToken: fakeToken})
		if err != nil {
			http.Error(w, `{"__type":"InvalidSignatureException","message":"`+err.Error()+`"}`, http.StatusForbidden)
			return
		}
		f.regions = append(f.regions, region)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		if f.deny {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"__type":"AccessDeniedException","message":"User is not authorized to perform: ecr:GetAuthorizationToken"}`))
			return
		}
		tok := base64.StdEncoding.EncodeToString([]byte("AWS:ecr-password-" + region))
		json.NewEncoder(w).Encode(map[string]any{"authorizationData": []map[string]any{{
			"authorizationToken": tok, "expiresAt": f.expiresAt.Unix(), "proxyEndpoint": "https://example",
		}}})
	})
}

func TestECRKeychain(t *testing.T) {
	f := &fakeECR{}
	srv := httptest.NewServer(f.handler(t))
	defer srv.Close()
	// The SDK's default chain, isolated from this machine: container credentials only.
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", srv.URL+"/creds")
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "task-auth")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR"} {
		t.Setenv(k, "")
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.expiresAt = now.Add(12 * time.Hour)
	clock := now
	kc := ECRKeychain(ECROptions{Endpoint: srv.URL, Now: func() time.Time { return clock }})

	resolve := func(host string) (*authn.AuthConfig, error) {
		r, err := name.NewRepository(host + "/app")
		if err != nil {
			t.Fatal(err)
		}
		a, err := authn.Resolve(context.Background(), kc, r)
		if err != nil {
			return nil, err
		}
		return a.Authorization()
	}
	for _, host := range []string{"123456789012.dkr.ecr.eu-west-1.amazonaws.com", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com"} {
		cfg, err := resolve(host)
		if err != nil {
			t.Fatal(err)
		}
		region := strings.Split(host, ".")[3]
		if cfg.Username != "AWS" || cfg.Password != "ecr-password-"+region {
			t.Fatalf("%s: %+v", host, cfg)
		}
	}
	// One token per registry, each signed for the registry's region.
	if f.calls != 2 || strings.Join(f.regions, ",") != "eu-west-1,us-gov-west-1" {
		t.Fatalf("%d token calls, regions %v", f.calls, f.regions)
	}
	// Near expiry the token is fetched again.
	clock = now.Add(12*time.Hour - 10*time.Minute)
	if _, err := resolve("123456789012.dkr.ecr.eu-west-1.amazonaws.com"); err != nil || f.calls != 3 {
		t.Fatalf("renewal: %v, %d calls", err, f.calls)
	}
	// Not ECR: anonymous, and no AWS call at all.
	if a, _ := kc.Resolve(mustRepo(t, "ghcr.io/acme/app")); a != authn.Anonymous || f.calls != 3 {
		t.Fatal("a non-ECR host got ECR credentials or cost a call")
	}
	// A denied identity: the error names the registry and the permission.
	f.deny = true
	_, err := resolve("210987654321.dkr.ecr.us-east-1.amazonaws.com")
	if err == nil || !strings.Contains(err.Error(), "210987654321.dkr.ecr.us-east-1.amazonaws.com") || !strings.Contains(err.Error(), "ecr:GetAuthorizationToken") || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("denied: %v", err)
	}
}

func TestIsECR(t *testing.T) {
	for host, want := range map[string]bool{
		"123456789012.dkr.ecr.eu-west-1.amazonaws.com":      true,
		"123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn":  true,
		"123456789012.dkr.ecr-fips.us-east-1.amazonaws.com": true,
		"public.ecr.aws":                                            false,
		"12345.dkr.ecr.eu-west-1.amazonaws.com":                     false,
		"123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example": false,
	} {
		if IsECR(host) != want {
			t.Errorf("IsECR(%s) = %v", host, !want)
		}
	}
}
