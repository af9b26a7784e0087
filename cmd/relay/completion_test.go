package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletion: the bash script loads in bash and completes commands and each command's
// flags, a flag's value before the command included; zsh and fish name every command.
func TestCompletion(t *testing.T) {
	code, script, stderr := runCLI(t, nil, "completion", "bash")
	if code != 0 {
		t.Fatalf("exit %d %s", code, stderr)
	}
	path := filepath.Join(t.TempDir(), "relay.bash")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		words string
		want  string
	}{
		{"relay ru", "run runner"},
		{"relay --config x.yaml ch", "check checkout"},
		{"relay check --ou", "--out --output"},
		{"relay run --lo", "--local --log-format --log-level"},
		{"relay completion --h", "--help"},
	} {
		words := strings.Fields(tc.words)
		sh := ". " + path + "\nCOMP_WORDS=(" + strings.Join(words, " ") + "); COMP_CWORD=" + string(rune('0'+len(words)-1)) + "; _relay; echo \"${COMPREPLY[*]}\"\n"
		out, err := exec.Command("bash", "--norc", "--noprofile", "-c", sh).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("%q: %q %v, want %q", tc.words, out, err, tc.want)
		}
	}
	app := newApp(nil, nil, func(string) string { return "" }, nil)
	for _, shell := range []string{"zsh", "fish"} {
		code, out, _ := runCLI(t, nil, "completion", shell)
		if code != 0 {
			t.Fatalf("%s: exit %d", shell, code)
		}
		for _, c := range app.Commands {
			if !strings.Contains(out, " "+c.Name) {
				t.Errorf("%s completion lacks %s", shell, c.Name)
			}
		}
	}
	if code, _, stderr := runCLI(t, nil, "completion", "powershell"); code != exitUsage || !strings.Contains(stderr, "use bash, zsh or fish") {
		t.Fatalf("powershell: exit %d %s", code, stderr)
	}
}
