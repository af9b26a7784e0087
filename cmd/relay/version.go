package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/logging"
)

// version is set with -ldflags "-X main.version=..." by `make build`.
var version = "dev"

func versionText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "relay %s\n", version)
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b.String()
	}
	fmt.Fprintf(&b, "go %s\n", bi.GoVersion)
	key := []string{
		"github.com/google/go-containerregistry", "github.com/sigstore/sigstore-go", "github.com/anchore/syft",
		"github.com/go-git/go-git/v5", "github.com/in-toto/attestation", "github.com/urfave/cli/v2",
	}
	for _, k := range key {
		for _, d := range bi.Deps {
			if d.Path == k {
				v := d.Version
				if d.Replace != nil {
					v = d.Replace.Version
				}
				fmt.Fprintf(&b, "%s %s\n", k, v)
			}
		}
	}
	return b.String()
}

func nowUTC() time.Time { return time.Now().UTC() }

// httpClient is relay's client for the API calls outside a pipeline (runner, doctor):
// each call is also bounded at 30 s in all, as before, so a runner shutting down within
// its platform's grace period still deregisters or gives up in time.
func (o Options) httpClient(ctx context.Context) *http.Client {
	hc := wire.HTTPClient(ctx, o.wiring(nil, logging.CorrelationID(o.Getenv)))
	hc.Timeout = 30 * time.Second
	return hc
}

// wiring is what internal/wire needs of the options, with the run's logger and id.
func (o Options) wiring(logger *slog.Logger, cid string) wire.Options {
	return wire.Options{
		Config: o.Config, State: o.State, Local: o.Local, DryRun: o.DryRun, Out: o.Out, Jobs: o.Jobs, Replace: o.Replace,
		Timeout: o.Timeout, Getenv: o.Getenv, Redactor: o.Redactor, Logger: logger, CorrelationID: cid, Version: version, Steps: o.Steps,
	}
}

// versionCommand is `relay version`.
func versionCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print relay's version and the versions of its key libraries",
		UsageText: "relay version",
		Action: func(c *cli.Context) error {
			fmt.Fprint(stdout, versionText())
			return nil
		},
	}
}
