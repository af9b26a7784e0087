package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// completionCommand is `relay completion SHELL`: a script generated from the commands and
// flags themselves, so it cannot drift from them.
func completionCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "completion",
		Usage: "print a shell completion script for bash, zsh or fish",
		UsageText: `source <(relay completion bash)                          # this shell; add it to ~/.bashrc to keep it
   relay completion zsh > "${fpath[1]}/_relay"              # zsh, then restart the shell
   relay completion fish > ~/.config/fish/completions/relay.fish`,
		OnUsageError: usageErr,
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return &usageError{Err: fmt.Errorf("relay completion takes one shell: bash, zsh or fish")}
			}
			cmds := completions(c.App)
			switch sh := c.Args().First(); sh {
			case "bash":
				fmt.Fprint(stdout, bashCompletion(cmds))
			case "zsh":
				// zsh runs the bash function through its bashcompinit layer.
				fmt.Fprint(stdout, "#compdef relay\nautoload -U +X bashcompinit && bashcompinit\n"+bashCompletion(cmds))
			case "fish":
				fmt.Fprint(stdout, fishCompletion(cmds))
			default:
				return &usageError{Err: fmt.Errorf("relay completion %q: use bash, zsh or fish", sh)}
			}
			return nil
		},
	}
}

type completion struct {
	name, usage string
	flags       []string // --name, for every name
}

func completions(app *cli.App) []completion {
	var out []completion
	for _, c := range app.Commands {
		if c.Hidden {
			continue
		}
		cc := completion{name: c.Name, usage: c.Usage}
		for _, f := range c.Flags {
			for _, n := range f.Names() {
				if len(n) > 1 {
					cc.flags = append(cc.flags, "--"+n)
				}
			}
		}
		cc.flags = append(cc.flags, "--help") // urfave/cli adds it to some commands itself
		sort.Strings(cc.flags)
		cc.flags = slices.Compact(cc.flags)
		out = append(out, cc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func bashCompletion(cmds []completion) string {
	var names []string
	var b strings.Builder
	for _, c := range cmds {
		names = append(names, c.name)
	}
	b.WriteString("# relay completion for bash: source <(relay completion bash)\n_relay() {\n")
	b.WriteString("  local cur=\"${COMP_WORDS[COMP_CWORD]}\" cmd=\"\" i\n")
	// The command is the first word that names one: a flag's value before it is not.
	fmt.Fprintf(&b, "  for ((i = 1; i < COMP_CWORD; i++)); do\n    case \" %s \" in *\" ${COMP_WORDS[i]} \"*) cmd=\"${COMP_WORDS[i]}\"; break ;; esac\n  done\n", strings.Join(names, " "))
	b.WriteString("  local words\n  case \"$cmd\" in\n")
	fmt.Fprintf(&b, "    \"\") words=%q ;;\n", strings.Join(append(names, "--help", "--version"), " "))
	for _, c := range cmds {
		fmt.Fprintf(&b, "    %s) words=%q ;;\n", c.name, strings.Join(c.flags, " "))
	}
	b.WriteString("    *) words=\"\" ;;\n  esac\n")
	b.WriteString("  if [[ -n \"$cmd\" && \"$cur\" != -* ]]; then\n    COMPREPLY=($(compgen -f -- \"$cur\"))\n  else\n    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n  fi\n}\n")
	b.WriteString("complete -o default -F _relay relay\n")
	return b.String()
}

func fishCompletion(cmds []completion) string {
	var b strings.Builder
	b.WriteString("# relay completion for fish: relay completion fish > ~/.config/fish/completions/relay.fish\n")
	b.WriteString("complete -c relay -f -n '__fish_use_subcommand' -l version -d 'print relay\\'s version'\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "complete -c relay -f -n '__fish_use_subcommand' -a %s -d %s\n", c.name, fishQuote(c.usage))
		for _, f := range c.flags {
			fmt.Fprintf(&b, "complete -c relay -n '__fish_seen_subcommand_from %s' -l %s\n", c.name, strings.TrimPrefix(f, "--"))
		}
	}
	return b.String()
}

func fishQuote(s string) string {
	if r := []rune(s); len(r) > 80 {
		s = string(r[:77]) + "..."
	}
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}
