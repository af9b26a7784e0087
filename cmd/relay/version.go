package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// version is set with -ldflags "-X main.version=..." by `make build`; `go install
// …/cmd/relay@v1.2.3` sets no flag, and the module's version stands in.
// (-X needs a constant initializer, hence init).
var version = "dev"

func init() {
	if bi, ok := debug.ReadBuildInfo(); ok && version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
}

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
