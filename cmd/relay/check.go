package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/steps"
)

// checkCommand is `relay check`: relay.yaml validated offline, as the run would see it.
func checkCommand(getenv func(string) string, optsOf func(*cli.Context) (Options, error)) *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "validate relay.yaml offline (keys, tag and build-argument templates, platforms, durations) and show the tags a ref gets",
		UsageText: `relay check                     # exit 0 valid, 2 invalid (file:line: what and how to fix)
   relay check --ref v1.2.3        # and the tags a release of v1.2.3 gets
   relay check --output json       # for editors and pre-commit hooks`,
		Description: `Reads relay.yaml the way relay run does (inside GitHub Actions, what it leaves out of
source comes from GITHUB_REF and GITHUB_REPOSITORY), makes no network call and reads no
state. A template typo is an exit-2 error here, not a failed release after signing.`,
		Flags: append(commonFlags(), baseFlag,
			&cli.StringFlag{Name: "ref", EnvVars: []string{"RELAY_REF"}, Usage: "check the release of this tag or commit instead of source.ref"},
			&cli.StringFlag{Name: "output", Value: "text", EnvVars: []string{"RELAY_OUTPUT"}, Usage: "text or json"}),
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			o, err := optsOf(c)
			if err != nil {
				return err
			}
			f := flagReader{c: c, getenv: getenv}
			o.Output, o.Bases, o.Ref = f.str("output"), f.list("base"), f.str("ref")
			if f.err != nil {
				return f.err
			}
			if o.Output != "text" && o.Output != "json" {
				return &usageError{Err: fmt.Errorf("--output %q: use text or json", o.Output)}
			}
			if c.Args().Len() > 0 {
				return &usageError{Err: fmt.Errorf("relay check takes no arguments (the file is --config), got %q", c.Args().Slice())}
			}
			return check(o)
		},
	}
}

// checkReport is `relay check --output json`.
type checkReport struct {
	File   string       `json:"file"`
	Valid  bool         `json:"valid"`
	Error  string       `json:"error,omitempty"`
	Line   int          `json:"line,omitempty"`
	Fix    string       `json:"fix,omitempty"`
	Source *checkSource `json:"source,omitempty"`
	Images []checkImage `json:"images,omitempty"`
	From   string       `json:"source_from,omitempty"` // where left-out source settings came from
	Notes  []string     `json:"notes,omitempty"`
}

type checkSource struct {
	Repo string `json:"repo"`
	Ref  string `json:"ref"`
	URL  string `json:"url,omitempty"`
}

type checkImage struct {
	Name      string   `json:"name"`
	Platforms []string `json:"platforms"`
	Targets   []string `json:"targets"`
	Tags      []string `json:"tags"`
}

var fullCommit = regexp.MustCompile(`^[0-9a-f]{40}$`)

func check(o Options) error {
	logger, _, err := newLogger(o)
	if err != nil {
		return err
	}
	rep := checkReport{File: o.Config}
	cfg, err := loadConfig(o, logger)
	if err == nil {
		err = rep.fill(cfg)
	}
	if err != nil {
		var ce *config.Error
		rep.Error = err.Error()
		if errors.As(err, &ce) {
			rep.Error, rep.Line, rep.Fix = ce.Msg, ce.Line, ce.Fix
		}
		if o.Output == "json" {
			if werr := writeJSON(o.Stdout, rep); werr != nil {
				return werr
			}
		}
		return err
	}
	rep.Valid = true
	if o.Output == "json" {
		return writeJSON(o.Stdout, rep)
	}
	w := o.Stdout
	fmt.Fprintf(w, "%s: valid\n", rep.File)
	from := ""
	if rep.From != "" {
		from = " (left out of relay.yaml: from " + rep.From + ")"
	}
	fmt.Fprintf(w, "  source  %s at %s%s\n", orNone(rep.Source.URL, rep.Source.Repo), rep.Source.Ref, from)
	for _, im := range rep.Images {
		fmt.Fprintf(w, "  image %s  %s\n    targets: %s\n    tags:    %s\n", im.Name, strings.Join(im.Platforms, ", "), strings.Join(im.Targets, ", "), strings.Join(im.Tags, ", "))
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	return nil
}

// fill describes cfg, rendering each image's tags for its ref: a full commit id is a
// release no tag names; any other ref is taken to be the tag it names (checkout will say).
func (r *checkReport) fill(cfg *config.Config) error {
	s := cfg.Source
	r.Source, r.From = &checkSource{Repo: s.Repo, Ref: s.Ref, URL: s.URL}, cfg.FilledFrom
	d := config.NewTagData(s.Ref, strings.Repeat("0", 40))
	if fullCommit.MatchString(s.Ref) {
		d = config.NewTagData("", s.Ref)
	} else {
		r.Notes = append(r.Notes, fmt.Sprintf("tags shown for a release of tag %s; a branch releases its commit, whose tags use the short commit", s.Ref))
	}
	tags, err := cfg.TagsFor(d)
	if err != nil {
		return err
	}
	for _, im := range cfg.Images {
		r.Images = append(r.Images, checkImage{Name: im.Name, Platforms: im.Platforms, Targets: im.Targets, Tags: tags[im.Name]})
	}
	_ = wire.SourceURL(cfg, cfg.File, steps.ModeLocal) // --local's rule never fails: it only reads the origin remote
	if cfg.Source.URL == "" {
		r.Notes = append(r.Notes, "source.url is unset, and source.repo is a local path with no origin remote: only --local can run it (a real run must name a page consumers can open)")
	}
	r.Source.URL = cfg.Source.URL
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orNone(s, alt string) string {
	if s != "" {
		return s
	}
	return alt
}
