package attest

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/relaydev/relay/internal/httpx"
)

// KeylessOptions configure a KeylessSigner.
type KeylessOptions struct {
	// SigningConfig names the Fulcio, Rekor and timestamp authority to use
	// (signing_config.json; the public-good instance's comes from its TUF repository).
	SigningConfig *root.SigningConfig
	// TrustedRoot checks every bundle right after it is made, so a misconfigured instance
	// fails the sign step instead of the consumer's verify.
	TrustedRoot root.TrustedMaterial
	Tokens      TokenSource
	// PublicLog says the transparency log is the public one: then a token for a private or
	// internal repository (GitHub's repository_visibility claim) is refused unless
	// AllowPrivateInPublicLog, because public entries reveal repository and workflow names.
	PublicLog               bool
	AllowPrivateInPublicLog bool
	// Budget is the time retries of each of Fulcio, Rekor and the TSA may wait (default 10 min).
	Budget time.Duration
	// Transport is relay's HTTP chain and Retrier the retry layer in it, which gets the
	// services' hosts with Budget; without a Retrier one with Sleep and Rand is added over
	// Transport.
	Transport http.RoundTripper
	Retrier   *httpx.Retrier
	Logger    *slog.Logger
	Now       func() time.Time
	Sleep     func(ctx context.Context, d time.Duration) error
	Rand      *rand.Rand
}

// KeylessSigner signs with an ephemeral key certified by Fulcio for the workload's OIDC
// identity, timestamps each signature (RFC 3161) and/or logs it in Rekor. One certificate
// serves every artifact of the run while it is valid.
type KeylessSigner struct {
	o     KeylessOptions
	kp    *sign.EphemeralKeypair
	certs *runCertificate
	*services
	fulcio string
}

// services are the timestamp authorities and transparency logs a signature goes to.
type services struct {
	tsas    []*sign.TimestampAuthority
	tlogs   []sign.Transparency
	rekor1  sign.Transparency // a Rekor v1 log among tlogs: cosign's classic format needs one
	urls    []Endpoint        // what was picked, for checks that the services answer
	refused *refusals         // refusals the services' transports saw
	tr      root.TrustedMaterial
}

// retrying is the transport of the Sigstore clients: relay's chain, whose retry layer
// learns the signing config's hosts and their budget, or, without one, Transport under a
// retry layer of the clients' own.
func retrying(sc *root.SigningConfig, transport http.RoundTripper, r *httpx.Retrier, budget time.Duration, logger *slog.Logger,
	sleep func(context.Context, time.Duration) error, rnd *rand.Rand) http.RoundTripper {
	if budget <= 0 {
		budget = 10 * time.Minute
	}
	// Attempts are bounded by the budget alone: a log's outage of a few minutes should not
	// fail a release that took an hour to build.
	policy := httpx.RetryPolicy{MaxAttempts: math.MaxInt32, Initial: time.Second, Max: 32 * time.Second, Budget: budget}
	if transport == nil {
		transport = httpx.Transport()
	}
	hc, r := httpx.Retrying(&http.Client{Transport: transport}, r, httpx.RetryOptions{Policy: policy, Logger: logger, Sleep: sleep, Rand: rnd})
	transport = hc.Transport
	var urls []string
	for _, list := range [][]root.Service{sc.FulcioCertificateAuthorityURLs(), sc.RekorLogURLs(), sc.TimestampAuthorityURLs()} {
		for _, svc := range list {
			urls = append(urls, svc.URL)
		}
	}
	for _, s := range urls {
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			r.Name("Sigstore", u.Host)
			r.SetPolicy(u.Host, policy)
		}
	}
	return transport
}

// newServices picks the timestamp authorities and logs of the signing config that are
// valid now and whose API versions relay speaks.
func newServices(sc *root.SigningConfig, now time.Time, transport http.RoundTripper) (*services, error) {
	s := &services{refused: &refusals{}}
	transport = s.refused.transport(transport)
	if len(sc.TimestampAuthorityURLs()) > 0 {
		tsas, err := root.SelectServices(sc.TimestampAuthorityURLs(), sc.TimestampAuthorityURLsConfig(), sign.TimestampAuthorityAPIVersions, now)
		if err != nil {
			return nil, fmt.Errorf("signing config: timestamp authorities: %w", err)
		}
		for _, t := range tsas {
			s.urls = append(s.urls, Endpoint{Service: "timestamp authority", URL: t.URL})
			s.tsas = append(s.tsas, sign.NewTimestampAuthority(&sign.TimestampAuthorityOptions{URL: t.URL, Transport: transport}))
		}
	}
	if len(sc.RekorLogURLs()) > 0 {
		logs, err := root.SelectServices(sc.RekorLogURLs(), sc.RekorLogURLsConfig(), sign.RekorAPIVersions, now)
		if err != nil {
			return nil, fmt.Errorf("signing config: transparency logs: %w", err)
		}
		for _, l := range logs {
			if l.MajorAPIVersion == 2 && len(s.tsas) == 0 {
				return nil, fmt.Errorf("signing config: Rekor v2 (%s) records no time, so a timestamp authority is required and none is configured", l.URL)
			}
			// The clients are made here: sigstore-go makes them lazily, racily, when the
			// digests of a step are signed side by side.
			s.urls = append(s.urls, Endpoint{Service: fmt.Sprintf("Rekor v%d", l.MajorAPIVersion), URL: l.URL})
			ro := &sign.RekorOptions{BaseURL: l.URL, Version: l.MajorAPIVersion, Timeout: 30 * time.Second}
			if l.MajorAPIVersion == 2 {
				w, err := newRekorV2(l.URL, transport, "")
				if err != nil {
					return nil, fmt.Errorf("signing config: Rekor v2 %s: %w", l.URL, err)
				}
				ro.ClientV2 = w
			} else {
				c, err := rekorV1(l.URL, transport)
				if err != nil {
					return nil, fmt.Errorf("signing config: Rekor %s: %w", l.URL, err)
				}
				ro.Client = c.Entries
			}
			t := sign.NewRekor(ro)
			s.tlogs = append(s.tlogs, t)
			if l.MajorAPIVersion == 1 && s.rekor1 == nil {
				s.rekor1 = t
			}
		}
	}
	return s, nil
}

// bundle signs content with kp and the certificate provider (nil for a key), timestamps
// and logs it. The transport under the services retries what waiting can fix, within
// each host's budget; a refusal (a bad token, a forbidden request) fails at once.
func (s *services) bundle(ctx context.Context, content sign.Content, kp sign.Keypair, certs sign.CertificateProvider, tlogs []sign.Transparency) (*protobundle.Bundle, error) {
	b, err := sign.Bundle(content, kp, sign.BundleOptions{
		CertificateProvider:  certs,
		TimestampAuthorities: s.tsas,
		TransparencyLogs:     tlogs,
		Context:              ctx,
		TrustedRoot:          s.tr,
	})
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return b, err
}

// NewKeylessSigner picks the services the signing config names that are valid now and
// whose API versions relay speaks.
func NewKeylessSigner(o KeylessOptions) (*KeylessSigner, error) {
	if o.SigningConfig == nil {
		return nil, errors.New("keyless signing needs a signing config (which Fulcio, Rekor and TSA to use)")
	}
	if o.Tokens == nil {
		return nil, errors.New("keyless signing needs an OIDC token source")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	sc, now := o.SigningConfig, o.Now()
	fulcio, err := root.SelectService(sc.FulcioCertificateAuthorityURLs(), sign.FulcioAPIVersions, now)
	if err != nil {
		return nil, fmt.Errorf("signing config: no usable Fulcio: %w", err)
	}
	o.Transport = retrying(sc, o.Transport, o.Retrier, o.Budget, o.Logger, o.Sleep, o.Rand)
	svc, err := newServices(sc, now, o.Transport)
	if err != nil {
		return nil, err
	}
	svc.tr = o.TrustedRoot
	s := &KeylessSigner{o: o, fulcio: fulcio.URL, services: svc}
	if len(s.tsas) == 0 && len(s.tlogs) == 0 {
		return nil, errors.New("signing config: a keyless signature needs a transparency log or a timestamp authority to prove when it was made, and none is configured")
	}
	if s.kp, err = sign.NewEphemeralKeypair(nil); err != nil {
		return nil, err
	}
	s.certs = &runCertificate{fulcio: sign.NewFulcio(&sign.FulcioOptions{BaseURL: fulcio.URL, Transport: svc.refused.transport(o.Transport)}), tokens: o.Tokens, now: o.Now, logger: o.Logger,
		guard: o.PublicLog && len(s.tlogs) > 0 && !o.AllowPrivateInPublicLog}
	if o.PublicLog {
		s.certs.audience = "sigstore"
	}
	return s, nil
}

// Endpoint is a Sigstore service a signer will call.
type Endpoint struct{ Service, URL string }

// Endpoints are the Fulcio, logs and timestamp authorities signing will call.
func (s *KeylessSigner) Endpoints() []Endpoint {
	return append([]Endpoint{{Service: "Fulcio", URL: s.fulcio}}, s.urls...)
}

// CheckIdentity obtains an identity token and checks it as signing would before Fulcio
// sees it: the claims Fulcio checks (expiry, subject, audience) and the private
// repository rule. It returns the token's subject.
func (s *KeylessSigner) CheckIdentity(ctx context.Context) (string, error) {
	c := s.certs
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return "", fmt.Errorf("%w from %s: %w", ErrNoToken, c.tokens.Name(), err)
	}
	if err := CheckIDToken(tok, c.now(), c.audience); err != nil {
		return "", err
	}
	if c.guard {
		if err := PrivateRepositoryError(tok); err != nil {
			return "", err
		}
	}
	return tokenSubject(tok), nil
}

// Identity implements Signer: the certificate's identity once one was issued.
func (s *KeylessSigner) Identity() string {
	if id := s.certs.identity(); id != "" {
		return "keyless " + id
	}
	return "keyless (Fulcio " + s.fulcio + ", token from " + s.o.Tokens.Name() + ")"
}

// Policy is the identity policy this run's signatures satisfy: the subject and issuer of
// the certificate Fulcio issued (asking for one if none was issued yet).
func (s *KeylessSigner) Policy(ctx context.Context) (IdentityPolicy, error) {
	if _, err := s.certs.GetCertificate(ctx, s.kp, nil); err != nil {
		return IdentityPolicy{}, fmt.Errorf("keyless signing: %w", err)
	}
	s.certs.mu.Lock()
	defer s.certs.mu.Unlock()
	return IdentityPolicy{Identity: s.certs.san, Issuer: s.certs.issuer}, nil
}

// UsesTransparencyLog reports whether signatures go to a Rekor log.
func (s *KeylessSigner) UsesTransparencyLog() bool { return len(s.tlogs) > 0 }

// SignStatement implements Signer. Failures of the Sigstore services that may pass (5xx,
// 429, network) are retried by the transport until the host's budget is spent.
func (s *KeylessSigner) SignStatement(ctx context.Context, statement []byte) ([]byte, error) {
	b, err := s.bundle(ctx, &sign.DSSEData{Data: statement, PayloadType: InTotoPayloadType}, s.tlogs)
	if err != nil {
		return nil, err
	}
	return protojson.Marshal(b)
}

// bundle signs content with the run's certificate, timestamps and logs it.
func (s *KeylessSigner) bundle(ctx context.Context, content sign.Content, tlogs []sign.Transparency) (*protobundle.Bundle, error) {
	b, err := s.services.bundle(ctx, content, s.kp, s.certs, tlogs)
	if err != nil {
		return nil, fmt.Errorf("keyless signing: %w", err)
	}
	return b, nil
}

// ErrNoToken is an identity token that could not be had; waiting does not bring one.
var ErrNoToken = errors.New("no OIDC identity token")

// ErrPrivateRepository is a private or internal repository about to enter the public log.
var ErrPrivateRepository = errors.New("private repository")

// PrivateRepositoryError reads (does not verify: it is our own token) the GitHub claims
// of an OIDC token and refuses a private or internal repository.
func PrivateRepositoryError(token string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var claims struct {
		Repository string `json:"repository"`
		Visibility string `json:"repository_visibility"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return nil
	}
	if claims.Visibility == "private" || claims.Visibility == "internal" {
		return fmt.Errorf("%w: %s is %s, and signing would record its name and workflow in the public Rekor log; set signing.allow_public_log: true to accept that, or use a private Sigstore instance (signing.trusted_root and signing.signing_config)", ErrPrivateRepository, claims.Repository, claims.Visibility)
	}
	return nil
}

// runCertificate asks Fulcio once per run for a certificate of the ephemeral key, and
// again only when it is about to expire (Fulcio's certificates live ten minutes).
type runCertificate struct {
	fulcio *sign.Fulcio
	tokens TokenSource
	now    func() time.Time
	logger *slog.Logger
	guard  bool // refuse private repositories (public log)
	// audience the token must carry: "sigstore" on the public-good instance; a private
	// Fulcio may take its own client ids, so none is required there.
	audience string

	mu          sync.Mutex
	der         []byte
	notAfter    time.Time
	id          string
	san, issuer string
}

func (c *runCertificate) GetCertificate(ctx context.Context, kp sign.Keypair, _ *sign.CertificateProviderOptions) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.der != nil && c.now().Add(time.Minute).Before(c.notAfter) {
		return c.der, nil
	}
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w from %s: %w", ErrNoToken, c.tokens.Name(), err)
	}
	// A token Fulcio must refuse fails now, with the claim named, not after the budget.
	if err := CheckIDToken(tok, c.now(), c.audience); err != nil {
		return nil, err
	}
	if c.guard {
		if err := PrivateRepositoryError(tok); err != nil {
			return nil, err
		}
	}
	der, err := c.fulcio.GetCertificate(ctx, kp, &sign.CertificateProviderOptions{IDToken: tok})
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing Fulcio's certificate: %w", err)
	}
	c.san, c.issuer = certSubject(cert)
	c.der, c.notAfter, c.id = der, cert.NotAfter, c.san+" (issuer "+c.issuer+")"
	c.logger.Info("signing certificate issued", "identity", c.id, "not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	return der, nil
}

func (c *runCertificate) identity() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

// oidIssuerV2 is Fulcio's OIDC issuer extension (DER-encoded UTF8String).
var oidIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}

// certSubject reads a Fulcio certificate's subject (URI or email) and OIDC issuer.
func certSubject(cert *x509.Certificate) (san, issuer string) {
	switch {
	case len(cert.URIs) > 0:
		san = cert.URIs[0].String()
	case len(cert.EmailAddresses) > 0:
		san = cert.EmailAddresses[0]
	}
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidIssuerV2) {
			asn1.Unmarshal(e.Value, &issuer)
		}
	}
	return san, issuer
}
