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
		&cli.StringFlag{Name: "output", Value: "text", EnvVars: []string{"RELAY_OUTPUT"}, Usage: "with --dry-run: the report as text or json (every write per destination, every check)"},
	)
	return &cli.Command{
		Name:  "run",
		Usage: "run the pipeline (all steps, or --only some), resuming from the saved state",
		UsageText: `relay run --local
   relay run --only build,copy
   relay run --restart
   relay run --dry-run                  # the real steps, writes diverted: the report lists each one`,
		Flags:        flags,
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			o, err := optsOf(c)
			if err != nil {
				return err
			}
			f := flagReader{c: c, getenv: getenv}
			only, restart := f.list("only"), f.bool("restart")
			o.Output = f.str("output")
			if f.err != nil {
				return f.err
			}
			return runPipeline(c.Context, o, only, restart, false)
		},
	}
}
