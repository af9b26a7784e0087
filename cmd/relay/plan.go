package main

import (
	"github.com/urfave/cli/v2"
)

// planCommand is `relay plan`: each step's plan and what is missing, writing nothing.
func planCommand(optsOf func(*cli.Context) (Options, error)) *cli.Command {
	return &cli.Command{
		Name:         "plan",
		Usage:        "print the ordered steps, what each will do and which inputs are missing; no network writes",
		UsageText:    "relay plan\n   relay plan --local",
		Flags:        commonFlags(),
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			o, err := optsOf(c)
			if err != nil {
				return err
			}
			return planCmd(c.Context, o)
		},
	}
}
