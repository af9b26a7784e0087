package attest

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/sign"
)

func testJWT(claims string) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".c2ln"
}

func TestCheckIDToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ok := `"sub":"repo:acme/app:ref:refs/tags/v1","aud":"sigstore","exp":1800000300`
	for _, tc := range []struct {
		name, token, audience, claim string
	}{
		{"good", testJWT("{" + ok + "}"), "sigstore", ""},
		{"good, audience list", testJWT(`{"sub":"s","aud":["x","sigstore"],"exp":1800000300}`), "sigstore", ""},
		{"good, private instance takes any audience", testJWT(`{"sub":"s","aud":"my-fulcio","exp":1800000300}`), "", ""},
		{"verified email", testJWT(`{"sub":"s","aud":"sigstore","email":"a@example.com","email_verified":true}`), "sigstore", ""},
		{"expired", testJWT(`{"sub":"s","aud":"sigstore","exp":1799999000}`), "sigstore", "exp"},
		{"not yet valid", testJWT(`{"sub":"s","aud":"sigstore","nbf":1800001000}`), "sigstore", "nbf"},
		{"no subject", testJWT(`{"aud":"sigstore","exp":1800000300}`), "sigstore", "sub"},
		{"unverified email", testJWT(`{"sub":"s","aud":"sigstore","email":"a@example.com","email_verified":false}`), "sigstore", "email_verified"},
		{"wrong audience", testJWT(`{"sub":"s","aud":"api://AzureADTokenExchange","exp":1800000300}`), "sigstore", "aud"},
		{"not a JWT", "opaque-token", "sigstore", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckIDToken(tc.token, now, tc.audience)
			var ce *TokenClaimError
			switch {
			case tc.name == "not a JWT":
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), "not a JSON Web Token") {
					t.Fatalf("%v", err)
				}
			case tc.claim == "":
				if err != nil {
					t.Fatalf("refused a good token: %v", err)
				}
			default:
				if !errors.As(err, &ce) || ce.Claim != tc.claim || !strings.Contains(err.Error(), `claim "`+tc.claim+`"`) {
					t.Fatalf("want the claim %q named: %v", tc.claim, err)
				}
			}
		})
	}
}

// TestUnusableTokenFailsAtOnce: a token Fulcio must refuse fails signing at once; Fulcio is
// not even asked (a nil client here would panic if it were), so no retry layer sees it.
func TestUnusableTokenFailsAtOnce(t *testing.T) {
	kp, err := sign.NewEphemeralKeypair(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &KeylessSigner{
		services: &services{},
		kp:       kp,
		certs: &runCertificate{tokens: staticToken(testJWT(`{"sub":"s","aud":"sigstore","email":"a@example.com","email_verified":false}`)),
			now: time.Now, logger: slog.New(slog.DiscardHandler), audience: "sigstore"},
	}
	stmt, _ := Statement([]Subject{{Name: "x", Digest: "sha256:" + strings.Repeat("a", 64)}}, PredicateSign, nil)
	_, err = s.SignStatement(context.Background(), stmt)
	var ce *TokenClaimError
	if !errors.As(err, &ce) || ce.Claim != "email_verified" {
		t.Fatalf("unusable token: %v", err)
	}
}

func TestExpectedPolicy(t *testing.T) {
	for _, tc := range []struct {
		name, claims string
		want         IdentityPolicy
		ok           bool
	}{
		{"actions", `{"iss":"https://token.actions.githubusercontent.com","sub":"repo:acme/shop:ref:refs/tags/v1","job_workflow_ref":"acme/shop/.github/workflows/release.yml@refs/tags/v1"}`,
			IdentityPolicy{Identity: "https://github.com/acme/shop/.github/workflows/release.yml@refs/tags/v1", Issuer: "https://token.actions.githubusercontent.com"}, true},
		{"email", `{"iss":"https://oidc.example","sub":"1","email":"a@example.com","email_verified":true}`, IdentityPolicy{Identity: "a@example.com", Issuer: "https://oidc.example"}, true},
		{"unverified email", `{"iss":"https://oidc.example","sub":"1","email":"a@example.com","email_verified":false}`, IdentityPolicy{}, false},
		{"GHES actions: mapping unknown", `{"iss":"https://ghe.example/_services/token","sub":"repo:a/b","job_workflow_ref":"a/b/.github/workflows/r.yml@refs/heads/main"}`, IdentityPolicy{}, false},
		{"no issuer", `{"sub":"1","email":"a@example.com"}`, IdentityPolicy{}, false},
	} {
		got, ok := ExpectedPolicy(testJWT(tc.claims))
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: %+v %v, want %+v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := ExpectedPolicy("not-a-jwt"); ok {
		t.Error("a non-JWT has a policy")
	}
}
