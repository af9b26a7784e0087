package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/relaydev/relay/internal/fsutil"
	"github.com/relaydev/relay/pkg/attest"
)

// verifyBlobCommand is `relay verify-blob FILE`: a consumer's check of a release file
// against its Sigstore bundle, as `cosign verify-blob --bundle` makes it.
func verifyBlobCommand(getenv func(string) string, optsOf func(*cli.Context) (Options, error)) *cli.Command {
	return &cli.Command{
		Name:  "verify-blob",
		Usage: "verify a release file (a binary, a chart, SHA256SUMS) against its Sigstore bundle",
		UsageText: `relay verify-blob relay-linux-amd64 \
     --certificate-identity https://github.com/relaydev/relay/.github/workflows/release.yml@refs/tags/v1.2.3 \
     --certificate-oidc-issuer https://token.actions.githubusercontent.com
   relay verify-blob dist/app-linux-amd64 --key dist/relay-signing.pub      # bundle: FILE.sigstore.json
   relay verify-blob app.tgz --bundle app.tgz.sigstore.json --key relay-signing.pub --output json`,
		Description: `The bundle (default FILE.sigstore.json, as relay's release names it) must hold a signature
over FILE's SHA-256 that verifies against the trusted root (public-good Sigstore unless
--trusted-root) and was made by the given identity and issuer, or by --key. cosign
verify-blob --bundle (v2 with --new-bundle-format, and v3) checks the same bundles.

Exit codes: 0 verified, 1 not verified, 2 usage error, 4 could not check (unreadable file
or bundle, no trusted root).`,
		Flags: append(append(commonFlags(), trustFlags("")...),
			&cli.StringFlag{Name: "bundle", EnvVars: []string{"RELAY_BUNDLE"}, Usage: "the Sigstore bundle (default: FILE.sigstore.json)"},
			&cli.StringFlag{Name: "output", Value: "text", EnvVars: []string{"RELAY_OUTPUT"}, Usage: "text or json"}),
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			o, err := optsOf(c)
			if err != nil {
				return err
			}
			if c.Args().Len() != 1 {
				return &usageError{Err: fmt.Errorf("relay verify-blob takes one FILE, got %q", c.Args().Slice())}
			}
			f := flagReader{c: c, getenv: getenv}
			vf, bundle := readTrustFlags(&f), f.str("bundle")
			if f.err != nil {
				return f.err
			}
			return verifyBlob(c, o, c.Args().First(), bundle, vf)
		},
	}
}

// blobReport is `relay verify-blob --output json`.
type blobReport struct {
	File     string `json:"file"`
	SHA256   string `json:"sha256"`
	Bundle   string `json:"bundle"`
	Verified bool   `json:"verified"`
	Signer   string `json:"signer,omitempty"`
	Error    string `json:"error,omitempty"`
}

// notVerifiedError: the bundle does not vouch for the file (exit 1).
type notVerifiedError struct{ msg string }

func (e *notVerifiedError) Error() string { return e.msg }

func verifyBlob(c *cli.Context, o Options, file, bundlePath string, f verifyFlags) error {
	if f.output != "text" && f.output != "json" {
		return &usageError{Err: fmt.Errorf("--output %q: use text or json", f.output)}
	}
	if bundlePath == "" {
		bundlePath = file + ".sigstore.json"
	}
	v, err := consumerVerifier(f)
	if err != nil {
		return err
	}
	sum, _, err := fsutil.SHA256File(file)
	if err != nil {
		return &cannotCheckError{err}
	}
	b, err := os.ReadFile(bundlePath)
	if err != nil {
		return &cannotCheckError{fmt.Errorf("reading the bundle: %w (pass --bundle if it is not FILE.sigstore.json)", err)}
	}
	rep := blobReport{File: file, SHA256: sum, Bundle: bundlePath}
	res, verr := v.VerifyStatement(c.Context, b, "sha256:"+sum, "")
	if verr == nil && res.PredicateType != attest.PredicateSign {
		verr = fmt.Errorf("the bundle is a %s attestation, not a signature of the file", res.PredicateType)
	}
	if verr != nil {
		verr = &notVerifiedError{fmt.Sprintf("%s is not verified by %s: %v", file, bundlePath, verr)}
		rep.Error = verr.Error()
	} else {
		rep.Verified, rep.Signer = true, res.Signer
	}
	if f.output == "json" {
		if err := writeJSON(o.Stdout, rep); err != nil {
			return err
		}
	} else if verr == nil {
		fmt.Fprintf(o.Stdout, "%s: verified (sha256 %s), signed by %s\n", file, sum, rep.Signer)
	}
	return verr
}
