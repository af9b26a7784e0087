package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/relaydev/relay/internal/wire"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/steps"
)

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
	var v *attest.Verifier
	if f.key != "" {
		if f.identity != "" || f.identityRegexp != "" {
			return &usageError{Err: fmt.Errorf("--key verifies a key signature; --certificate-identity applies to keyless ones: pass one or the other")}
		}
		pub, hint, err := attest.LoadPublicKey(f.key)
		if err != nil {
			return &usageError{Err: err}
		}
		tm, err := attest.TrustedKey(pub, hint)
		if err != nil {
			return err
		}
		if v, err = attest.NewKeyVerifier(tm); err != nil {
			return err
		}
	} else {
		p := attest.IdentityPolicy{Identity: f.identity, IdentityRegexp: f.identityRegexp, Issuer: f.issuer, IssuerRegexp: f.issuerRegexp, NoTransparencyLog: f.noTlog}
		if err := p.Validate(); err != nil {
			return &usageError{Err: err}
		}
		var tm root.TrustedMaterial
		if f.trustedRoot != "" {
			if tm, err = root.NewTrustedRootFromPath(f.trustedRoot); err != nil {
				return &usageError{Err: fmt.Errorf("--trusted-root %s: %v", f.trustedRoot, err)}
			}
		} else if tm, err = root.FetchTrustedRoot(); err != nil {
			return fmt.Errorf("fetching the public-good Sigstore trusted root (TUF): %w; pass --trusted-root for a private instance", err)
		}
		if v, err = attest.NewIdentityVerifier(tm, p); err != nil {
			return &usageError{Err: err}
		}
	}
	logger, cid, err := newLogger(o)
	if err != nil {
		return err
	}
	client, err := wire.RegistryClient(o.wiring(logger, cid), nil, true) // read-only: the write guard is on
	if err != nil {
		return err
	}
	rep, verr := steps.VerifyImage(ctx, client, v, ref)
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

func printReport(o Options, rep *steps.ImageReport) {
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
