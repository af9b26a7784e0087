package main

import (
	"github.com/urfave/cli/v2"
)

// runCommand is `relay run`: the pipeline, resuming from the state; --dry-run reports
// every write it would make instead.
func runCommand(getenv func(string) string, optsOf func(*cli.Context) (Options, error)) *cli.Command {
	flags := append(commonFlags(),
		&cli.StringSliceFlag{Name: "only", EnvVars: []string{"RELAY_ONLY"}, Usage: "run only these steps (comma-separated), in pipeline order"},
		&cli.BoolFlag{Name: "restart", EnvVars: []string{"RELAY_RESTART"}, Usage: "ignore the saved state and start over"},
		&cli.StringFlag{Name: "output", Value: "text", EnvVars: []string{"RELAY_OUTPUT"}, Usage: "text, or json: the result on stdout (images, digests, tags, release, verify commands, the failure); with --dry-run the report (every write per destination, every check)"},
		baseFlag,
		&cli.StringFlag{Name: "ref", EnvVars: []string{"RELAY_REF"}, Usage: "release this tag, branch or commit instead of source.ref (refs/tags/ and refs/heads/ prefixes are dropped)"},
	)
	return &cli.Command{
		Name:  "run",
		Usage: "run the pipeline (all steps, or --only some), resuming from the saved state",
		UsageText: `relay run --local
   relay run --only build,copy
   relay run --restart
   relay run --output json | jq .images # the result as JSON on stdout, failed or not
   relay run --dry-run                  # the real steps, writes diverted: the report lists each one
   relay run --ref v1.2.3               # release this tag, whatever source.ref says
   relay run --base relay-runner=registry.internal/mirror/actions-runner:2.337.0@sha256:…`,
		Flags:        flags,
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			o, err := optsOf(c)
			if err != nil {
				return err
			}
			f := flagReader{c: c, getenv: getenv}
			only, restart := f.list("only"), f.bool("restart")
			o.Output, o.Bases, o.Ref = f.str("output"), f.list("base"), f.str("ref")
			if f.err != nil {
				return f.err
			}
			return runPipeline(c.Context, o, only, restart, false)
		},
	}
}

// baseFlag overrides an image's local.base for the run: a mirror of the base, or a
// stand-in in a test, without editing relay.yaml.
var baseFlag = &cli.StringSliceFlag{Name: "base", EnvVars: []string{"RELAY_BASE"},
	Usage: "IMAGE=REF: build IMAGE on REF instead of its local.base (repeatable; part of the run's inputs)"}
