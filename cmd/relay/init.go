package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/go-git/go-git/v5"
	"github.com/urfave/cli/v2"

	"github.com/relaydev/relay/pkg/config"
)

// initCommand is `relay init`: a commented relay.yaml for what the directory holds.
func initCommand(getenv func(string) string) *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "write a commented relay.yaml for this directory's Go main packages, or its Dockerfile",
		UsageText: `relay init                       # relay.yaml for ./ (Go main packages, else a Dockerfile)
   relay init --registry ghcr.io/acme   # where the images go (default: from the origin remote)
   relay init --force               # replace an existing relay.yaml`,
		Description: `Looks for Go main packages (. and cmd/*) and builds them with relay's own builder (no
Docker daemon); without one, a Dockerfile, built by a cloud builder (ACR Tasks, Cloud Build or
CodeBuild: fill in its section). The file leaves source.ref out, so inside GitHub Actions a
tag push releases that tag; elsewhere pass --ref. It is checked like relay check before it
is written, and never replaces a relay.yaml without --force.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: "relay.yaml", EnvVars: []string{"RELAY_CONFIG"}, Usage: "the file to write"},
			&cli.StringFlag{Name: "registry", EnvVars: []string{"RELAY_REGISTRY"}, Usage: "registry and namespace of the images, e.g. ghcr.io/acme (default: ghcr.io/OWNER from the origin remote)"},
			&cli.BoolFlag{Name: "force", EnvVars: []string{"RELAY_FORCE"}, Usage: "replace an existing file"},
		},
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			f := flagReader{c: c, getenv: getenv}
			path, registry, force := f.str("config"), f.str("registry"), f.bool("force")
			if f.err != nil {
				return f.err
			}
			if c.Args().Len() > 0 {
				return &usageError{Err: fmt.Errorf("relay init takes no arguments, got %q", c.Args().Slice())}
			}
			return initConfig(c.App.Writer, path, registry, force)
		},
	}
}

type initData struct {
	Name, Registry, Owner, Repo string
	Mains                       []initMain
	Dockerfile                  bool
}

type initMain struct{ Name, Main string }

var initTemplate = template.Must(template.New("").Parse(`# relay.yaml for {{ .Name }}, written by relay init. docs/config.md explains every key.
#   relay check                      # validate it (offline)
#   relay run --local --ref v0.1.0   # the whole pipeline on stand-ins, in seconds
#   relay run                        # in GitHub Actions: a tag push releases that tag
version: 1

source:
  repo: .                # this repository
  # ref: v1.2.3          # left out: Actions release GITHUB_REF; elsewhere pass --ref
{{- if .Dockerfile }}

# A Dockerfile needs a builder that runs one: fill in ACR Tasks' section, or use
# kind: gcb (gcb: {project, bucket}) or kind: codebuild (codebuild: {project, bucket}).
builder:
  kind: acr
  registry: myregistry.azurecr.io/build   # ACR Tasks push to their own registry
  acr:
    subscription: 00000000-0000-0000-0000-000000000000
    resource_group: build
    registry: myregistry
{{- else }}

builder:
  kind: local            # relay builds Go and files itself: no Docker daemon
  registry: {{ .Registry }}/build   # builds land here by digest, before copy to the targets
{{- end }}

images:
{{- if .Dockerfile }}
  - name: {{ .Name }}
    platforms: [linux/amd64, linux/arm64]
    docker:
      dockerfile: Dockerfile
      build_args: {VERSION: "{{"{{"}} .Version {{"}}"}}"}
    targets:
      - {{ .Registry }}/{{ .Name }}
    tags: ["{{"{{"}} .Version {{"}}"}}", latest]   # the tag (v1.2.3), else the short commit
{{- else }}
{{- range .Mains }}
  - name: {{ .Name }}
    platforms: [linux/amd64, linux/arm64]
    local:
      base: scratch      # or a base by digest: REGISTRY/REPO:TAG@sha256:…
      go:
        main: {{ .Main }}
      user: "65532:65532"
    targets:
      - {{ $.Registry }}/{{ .Name }}
    tags: ["{{"{{"}} .Version {{"}}"}}", latest]   # the tag (v1.2.3), else the short commit
{{- end }}
{{- end }}

signing:
  mode: keyless          # in Actions the job's OIDC token (permissions: id-token: write)
{{ if .Repo }}
release:
  target: github         # needs contents: write; attestations need attestations: write
  github:
    repository: {{ .Owner }}/{{ .Repo }}
    attestations: true
{{- else }}
release:
  target: dir            # the release files go to --out (dist); or target: github
{{- end }}
`))

var notName = regexp.MustCompile(`[^a-z0-9._-]+`)

func initConfig(w interface{ Write([]byte) (int, error) }, path, registry string, force bool) error {
	if _, err := os.Stat(path); err == nil && !force {
		return &usageError{Err: fmt.Errorf("%s exists: relay init never replaces it (pass --force to)", path)}
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return err
	}
	d := initData{Name: cleanName(filepath.Base(dir))}
	d.Owner, d.Repo = githubOrigin(dir)
	if d.Repo != "" {
		d.Name = cleanName(d.Repo)
	}
	switch {
	case registry != "":
		d.Registry = strings.TrimSuffix(strings.ToLower(registry), "/")
	case d.Owner != "":
		d.Registry = "ghcr.io/" + strings.ToLower(d.Owner)
	default:
		d.Registry = "ghcr.io/" + d.Name // fix: your registry and namespace
	}
	d.Mains = goMains(dir)
	if len(d.Mains) == 1 && d.Mains[0].Main == "." {
		d.Mains[0].Name = d.Name // the repository's name, not the folder's
	}
	if len(d.Mains) == 0 {
		if _, err := os.Stat(filepath.Join(dir, "Dockerfile")); err != nil {
			return &usageError{Err: fmt.Errorf("%s holds no Go main package (. or cmd/*) and no Dockerfile: relay init has nothing to build; start from docs/relay.example.yaml", dir)}
		}
		d.Dockerfile = true
	}
	var b bytes.Buffer
	if err := initTemplate.Execute(&b, d); err != nil {
		return err
	}
	// What relay init writes, relay reads: checked as relay check would, for a tag push.
	if _, err := config.ParseWith(path, dir, b.Bytes(), config.Fallback{Ref: "v0.1.0", From: "relay init"}); err != nil {
		return fmt.Errorf("relay init made an invalid relay.yaml (a bug: please report it): %w", err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return err
	}
	what := "Go main packages: " + mainList(d.Mains)
	if d.Dockerfile {
		what = "the Dockerfile, with a cloud builder to fill in (builder.acr)"
	}
	fmt.Fprintf(w, "wrote %s for %s\nnext: relay check, then relay run --local --ref v0.1.0\n", path, what)
	return nil
}

func cleanName(s string) string {
	n := strings.Trim(notName.ReplaceAllString(strings.ToLower(s), "-"), "-._")
	if n == "" {
		return "app"
	}
	return n
}

// githubOrigin is OWNER and NAME of the origin remote when it is on github.com.
func githubOrigin(dir string) (string, string) {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return "", ""
	}
	r, err := repo.Remote("origin")
	if err != nil || len(r.Config().URLs) == 0 {
		return "", ""
	}
	u := config.BrowseURL(r.Config().URLs[0])
	rest, ok := strings.CutPrefix(u, "https://github.com/")
	owner, name, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || strings.Contains(name, "/") {
		return "", ""
	}
	return owner, name
}

// goMains are the Go main packages in dir and dir/cmd/*.
func goMains(dir string) []initMain {
	var out []initMain
	if isMain(dir) {
		out = append(out, initMain{Name: cleanName(filepath.Base(dir)), Main: "."})
	}
	cmds, _ := filepath.Glob(filepath.Join(dir, "cmd", "*"))
	sort.Strings(cmds)
	for _, c := range cmds {
		if isMain(c) {
			out = append(out, initMain{Name: cleanName(filepath.Base(c)), Main: "./cmd/" + filepath.Base(c)})
		}
	}
	return out
}

var (
	packageMain = regexp.MustCompile(`(?m)^package main\b`)
	funcMain    = regexp.MustCompile(`(?m)^func main\(\)`)
)

// isMain: dir's Go files are package main, and one of them has func main.
func isMain(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	pkg, fn := false, false
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pkg = pkg || packageMain.Match(b)
		fn = fn || funcMain.Match(b)
	}
	return pkg && fn
}

func mainList(ms []initMain) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Main)
	}
	return strings.Join(s, ", ")
}
