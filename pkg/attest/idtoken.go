package attest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// TokenClaimError is an identity token that Fulcio will refuse whatever the retries: the
// claim that decides it is named.
type TokenClaimError struct {
	Claim string
	Msg   string
}

func (e *TokenClaimError) Error() string {
	return fmt.Sprintf("the OIDC identity token cannot be used for keyless signing: %s (claim %q)", e.Msg, e.Claim)
}

// CheckIDToken reads (does not verify: the issuer's signature is Fulcio's to check) the
// claims of an identity token and refuses one Fulcio would refuse: expired or not yet
// valid, no subject, an email not verified, or (when audience is set) another audience.
func CheckIDToken(token string, now time.Time, audience string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return &TokenClaimError{Claim: "", Msg: "it is not a JSON Web Token (three dot-separated parts)"}
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return &TokenClaimError{Claim: "", Msg: "its payload is not base64url"}
	}
	var c struct {
		Sub           string          `json:"sub"`
		Exp           *float64        `json:"exp"`
		Nbf           *float64        `json:"nbf"`
		Aud           json.RawMessage `json:"aud"`
		Email         string          `json:"email"`
		EmailVerified *bool           `json:"email_verified"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return &TokenClaimError{Claim: "", Msg: "its payload is not a JSON object"}
	}
	const skew = time.Minute
	if c.Exp != nil {
		if exp := time.Unix(int64(*c.Exp), 0); now.After(exp.Add(skew)) {
			return &TokenClaimError{Claim: "exp", Msg: fmt.Sprintf("it expired at %s", exp.UTC().Format(time.RFC3339))}
		}
	}
	if c.Nbf != nil {
		if nbf := time.Unix(int64(*c.Nbf), 0); now.Add(skew).Before(nbf) {
			return &TokenClaimError{Claim: "nbf", Msg: fmt.Sprintf("it is not valid before %s (is this machine's clock right?)", nbf.UTC().Format(time.RFC3339))}
		}
	}
	if c.Sub == "" {
		return &TokenClaimError{Claim: "sub", Msg: "it names no subject"}
	}
	if c.Email != "" && c.EmailVerified != nil && !*c.EmailVerified {
		return &TokenClaimError{Claim: "email_verified", Msg: fmt.Sprintf("the email %s is not verified with the issuer", c.Email)}
	}
	if audience != "" {
		var auds []string
		var one string
		if json.Unmarshal(c.Aud, &one) == nil {
			auds = []string{one}
		} else {
			json.Unmarshal(c.Aud, &auds)
		}
		ok := false
		for _, a := range auds {
			ok = ok || a == audience
		}
		if !ok {
			return &TokenClaimError{Claim: "aud", Msg: fmt.Sprintf("its audience is %s, and Fulcio takes %q (in Actions: core.getIDToken('%s'))", strings.Join(auds, ", "), audience, audience)}
		}
	}
	return nil
}

// PermanentInput marks the error as one a retry cannot fix (the CLI exits 2).
func (e *TokenClaimError) PermanentInput() bool { return true }

// tokenSubject is the subject (or, where there is one, the email) a checked token names.
func tokenSubject(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	var c struct{ Sub, Email string }
	json.Unmarshal(raw, &c)
	if c.Email != "" {
		return c.Email
	}
	return c.Sub
}

// GitHubActionsIssuer is the issuer of GitHub Actions' (github.com's) identity tokens.
const GitHubActionsIssuer = "https://token.actions.githubusercontent.com"

// ExpectedPolicy is the identity policy Fulcio's certificate for token will satisfy, read
// from the token's claims as Fulcio maps them: an email token's verified email, or a
// github.com Actions token's workflow (https://github.com/ + job_workflow_ref). ok is
// false for a token whose mapping relay does not know; the certificate then tells.
func ExpectedPolicy(token string) (p IdentityPolicy, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return p, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return p, false
	}
	var c struct {
		Iss            string `json:"iss"`
		Email          string `json:"email"`
		EmailVerified  *bool  `json:"email_verified"`
		JobWorkflowRef string `json:"job_workflow_ref"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Iss == "" {
		return p, false
	}
	switch {
	case c.Iss == GitHubActionsIssuer && c.JobWorkflowRef != "":
		return IdentityPolicy{Identity: "https://github.com/" + c.JobWorkflowRef, Issuer: c.Iss}, true
	case c.Email != "" && (c.EmailVerified == nil || *c.EmailVerified):
		return IdentityPolicy{Identity: c.Email, Issuer: c.Iss}, true
	}
	return p, false
}

// ExpectedPolicy is the policy this run's certificate will satisfy, from its identity
// token's claims, without asking Fulcio (see the package function).
func (s *KeylessSigner) ExpectedPolicy(ctx context.Context) (IdentityPolicy, bool, error) {
	tok, err := s.certs.tokens.Token(ctx)
	if err != nil {
		return IdentityPolicy{}, false, err
	}
	p, ok := ExpectedPolicy(tok)
	p.NoTransparencyLog = !s.UsesTransparencyLog()
	return p, ok, nil
}
