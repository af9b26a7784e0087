package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/urfave/cli/v2"

	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/attach"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/oci"
)

// withVerifyArgs makes the verify step's command also `relay verify IMAGE`.
func withVerifyArgs(cmd *cli.Command, getenv func(string) string, optsOf func(*cli.Context) (Options, error)) {
	cmd.UsageText = `relay verify [--state .relay/state.json]    # the pipeline's verify step
   relay verify IMAGE --certificate-identity ID --certificate-oidc-issuer URL [--trusted-root trusted_root.json]
   relay verify ghcr.io/acme/app:v1.2.3 \
     --certificate-identity-regexp '^https://github.com/acme/app/\.github/workflows/release\.yml@' \
     --certificate-oidc-issuer https://token.actions.githubusercontent.com
   relay verify localhost:5000/acme/app@sha256:abc... --key dist/relay-signing.pub`
	cmd.Description = "Without arguments: the verify step of the pipeline. With IMAGE: a consumer's check that needs no relay state. Every manifest of IMAGE (the index and each platform) must carry a Sigstore signature that verifies against the trusted root (public-good Sigstore unless --trusted-root) and was made by the given identity and OIDC issuer (or by --key); attestations that verify are listed. Exit 0 when everything is signed, 1 otherwise."
	cmd.Flags = append(append(commonFlags(), trustFlags("with IMAGE: ")...),
		&cli.StringFlag{Name: "output", Value: "text", EnvVars: []string{"RELAY_OUTPUT"}, Usage: "text or json: with IMAGE the verification, as a step the run's result"})
	step := cmd.Action
	cmd.Action = func(c *cli.Context) error {
		if c.Args().Len() == 0 {
			return step(c)
		}
		o, err := optsOf(c)
		if err != nil {
			return err
		}
		if c.Args().Len() > 1 {
			return &usageError{Err: fmt.Errorf("relay verify takes one IMAGE, got %q", c.Args().Slice())}
		}
		f := flagReader{c: c, getenv: getenv}
		vf := readTrustFlags(&f)
		if f.err != nil {
			return f.err
		}
		return verifyCmd(c.Context, o, c.Args().First(), vf)
	}
}

// trustFlags are what a consumer's check trusts: a key, or an identity under a root.
func trustFlags(prefix string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "certificate-identity", EnvVars: []string{"RELAY_CERTIFICATE_IDENTITY"}, Usage: prefix + "the signer's identity (email or workflow URI), exactly"},
		&cli.StringFlag{Name: "certificate-identity-regexp", EnvVars: []string{"RELAY_CERTIFICATE_IDENTITY_REGEXP"}, Usage: prefix + "the signer's identity, as a regular expression"},
		&cli.StringFlag{Name: "certificate-oidc-issuer", EnvVars: []string{"RELAY_CERTIFICATE_OIDC_ISSUER"}, Usage: prefix + "the OIDC issuer that vouched for the signer, exactly"},
		&cli.StringFlag{Name: "certificate-oidc-issuer-regexp", EnvVars: []string{"RELAY_CERTIFICATE_OIDC_ISSUER_REGEXP"}, Usage: prefix + "the OIDC issuer, as a regular expression"},
		&cli.StringFlag{Name: "trusted-root", EnvVars: []string{"RELAY_TRUSTED_ROOT"}, Usage: prefix + "trusted_root.json of a private Sigstore instance (default: public-good, via TUF)"},
		&cli.StringFlag{Name: "key", EnvVars: []string{"RELAY_KEY"}, Usage: prefix + "verify key signatures with this PEM public key instead of an identity"},
		&cli.BoolFlag{Name: "no-tlog", EnvVars: []string{"RELAY_NO_TLOG"}, Usage: prefix + "accept keyless signatures without a Rekor entry (signed timestamps only)"},
	}
}

func readTrustFlags(f *flagReader) verifyFlags {
	return verifyFlags{
		identity: f.str("certificate-identity"), identityRegexp: f.str("certificate-identity-regexp"),
		issuer: f.str("certificate-oidc-issuer"), issuerRegexp: f.str("certificate-oidc-issuer-regexp"),
		trustedRoot: f.str("trusted-root"), key: f.str("key"), output: f.str("output"), noTlog: f.bool("no-tlog"),
	}
}

// cannotCheckError: the check could not be made (registry, network, trust root), which
// is not "not verified": exit 4, like a consumer needs to tell them apart.
type cannotCheckError struct{ err error }

func (e *cannotCheckError) Error() string { return "could not check: " + e.err.Error() }
func (e *cannotCheckError) Unwrap() error { return e.err }

// verifyFlags are `relay verify IMAGE`'s trust and identity settings.
type verifyFlags struct {
	identity, identityRegexp, issuer, issuerRegexp string
	trustedRoot, key, output                       string
	noTlog                                         bool
}

// verifyCmd is `relay verify IMAGE`: a consumer's check, needing no relay state or config.
func verifyCmd(ctx context.Context, o Options, image string, f verifyFlags) error {
	ref, err := name.ParseReference(image)
	if err != nil {
		return &usageError{Err: fmt.Errorf("IMAGE %q is not an image reference: %v", image, err)}
	}
	if f.output != "text" && f.output != "json" {
		return &usageError{Err: fmt.Errorf("--output %q: use text or json", f.output)}
	}
	v, err := consumerVerifier(f)
	if err != nil {
		return err
	}
	logger, cid, err := newLogger(o)
	if err != nil {
		return err
	}
	client, err := wire.RegistryClient(ctx, o.wiring(logger, cid), nil, true) // read-only: the write guard is on
	if err != nil {
		return err
	}
	rep, verr := attach.VerifyImage(ctx, client, v, ref)
	var unverified *attach.UnverifiedError
	if verr != nil && !errors.As(verr, &unverified) && ctx.Err() == nil {
		verr = &cannotCheckError{oci.ExplainAccess(verr)} // the image or its referrers could not be read
	}
	if rep != nil {
		if f.output == "json" {
			enc := json.NewEncoder(o.Stdout)
			enc.SetIndent("", "  ")
			enc.Encode(rep)
		} else {
			printReport(o, rep)
		}
	}
	return verr
}

// consumerVerifier is what relay verify IMAGE checks against: a public key, or an identity
// and issuer under a trusted root.
func consumerVerifier(f verifyFlags) (*attest.Verifier, error) {
	if f.key != "" {
		if f.identity != "" || f.identityRegexp != "" {
			return nil, &usageError{Err: fmt.Errorf("--key verifies a key signature; --certificate-identity applies to keyless ones: pass one or the other")}
		}
		pub, hint, err := attest.LoadPublicKey(f.key)
		if err != nil {
			return nil, &usageError{Err: err}
		}
		tm, err := attest.TrustedKey(pub, hint)
		if err != nil {
			return nil, err
		}
		return attest.NewKeyVerifier(tm)
	}
	p := attest.IdentityPolicy{Identity: f.identity, IdentityRegexp: f.identityRegexp, Issuer: f.issuer, IssuerRegexp: f.issuerRegexp, NoTransparencyLog: f.noTlog}
	if err := p.Validate(); err != nil {
		return nil, &usageError{Err: err}
	}
	var tm root.TrustedMaterial
	var err error
	if f.trustedRoot != "" {
		if tm, err = root.NewTrustedRootFromPath(f.trustedRoot); err != nil {
			return nil, &usageError{Err: fmt.Errorf("--trusted-root %s: %v", f.trustedRoot, err)}
		}
	} else if tm, err = root.FetchTrustedRoot(); err != nil {
		return nil, &cannotCheckError{fmt.Errorf("fetching the public-good Sigstore trusted root (TUF): %w; pass --trusted-root for a private instance", err)}
	}
	v, err := attest.NewIdentityVerifier(tm, p)
	if err != nil {
		return nil, &usageError{Err: err}
	}
	return v, nil
}

func printReport(o Options, rep *attach.ImageReport) {
	fmt.Fprintln(o.Stdout, rep.Image)
	for _, d := range rep.Digests {
		what := "index"
		if d.Platform != "" {
			what = d.Platform
		}
		status := "verified"
		if len(d.Signers) == 0 {
			status = "NOT VERIFIED"
		}
		fmt.Fprintf(o.Stdout, "  %s %s: %s\n", d.Digest, what, status)
		for _, s := range d.Signers {
			fmt.Fprintf(o.Stdout, "    signed by %s\n", s)
		}
		if len(d.Attestations) > 0 {
			fmt.Fprintf(o.Stdout, "    attestations: %s\n", strings.Join(d.Attestations, ", "))
		}
		for _, dup := range d.Duplicates {
			fmt.Fprintf(o.Stdout, "    duplicate: %s\n", dup)
		}
	}
}
