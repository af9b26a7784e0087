// Command binsize says where a Go binary's bytes go: the file-backed bytes of its symbols
// (code, read-only data, initialised data; not bss) summed per module, from the ELF symbol
// table and the build info. The binary must keep its symbols (no -s).
//
//	go build -trimpath -o /tmp/relay-syms ./cmd/relay && go run ./internal/cmd/binsize -top 25 /tmp/relay-syms
package main

import (
	"debug/buildinfo"
	"debug/elf"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

func main() {
	top := flag.Int("top", 25, "modules to list")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: binsize [-top N] BINARY (built without -s)")
		os.Exit(2)
	}
	rows, total, modules, err := attribute(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "binsize:", err)
		os.Exit(1)
	}
	fmt.Printf("| module | MiB | share |\n|---|---|---|\n")
	for i, r := range rows {
		if i == *top {
			break
		}
		fmt.Printf("| %s | %.1f | %.0f %% |\n", r.module, float64(r.bytes)/(1<<20), 100*float64(r.bytes)/float64(total))
	}
	fmt.Printf("\n%d modules linked; %.1f MiB of symbols in all.\n", modules, float64(total)/(1<<20))
}

type row struct {
	module string
	bytes  int64
}

// attribute sums each symbol's size into the module whose path is the longest prefix of
// the symbol's package; the standard library and the runtime's own tables are "std".
func attribute(path string) ([]row, int64, int, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, 0, 0, err
	}
	mods := []string{bi.Main.Path}
	for _, d := range bi.Deps {
		mods = append(mods, d.Path)
	}
	sort.Slice(mods, func(i, j int) bool { return len(mods[i]) > len(mods[j]) })
	f, err := elf.Open(path)
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%w (build it without -ldflags=-s)", err)
	}
	sum := map[string]int64{}
	var total int64
	for _, s := range syms {
		if s.Size == 0 || int(s.Section) >= len(f.Sections) || s.Section == elf.SHN_UNDEF {
			continue
		}
		if f.Sections[s.Section].Type == elf.SHT_NOBITS { // bss: no bytes in the file
			continue
		}
		m := moduleOf(symbolPath(s.Name), mods)
		sum[m] += int64(s.Size)
		total += int64(s.Size)
	}
	var rows []row
	for m, b := range sum {
		rows = append(rows, row{m, b})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].bytes > rows[j].bytes })
	return rows, total, len(bi.Deps), nil
}

// symbolPath is a symbol's name without the linker's prefixes and with only its first type:
// "type:*github.com/a/b.T" -> "github.com/a/b.T"; an itab names two types, a generic
// instance its type arguments.
func symbolPath(name string) string {
	for _, p := range []string{"type:", "go:itab.", "go:info.", "go:string.", "go:"} {
		name = strings.TrimPrefix(name, p)
	}
	name = strings.TrimLeft(name, "*[]()")
	if i := strings.IndexAny(name, ",["); i >= 0 {
		name = name[:i]
	}
	return name
}

// moduleOf is the longest module path the symbol's path begins with, up to a / or a .
// (module paths may hold dots: gopkg.in/yaml.v3).
func moduleOf(sym string, mods []string) string {
	for _, m := range mods {
		if strings.HasPrefix(sym, m) && len(sym) > len(m) && (sym[len(m)] == '/' || sym[len(m)] == '.') {
			return m
		}
	}
	return "std (and runtime tables)"
}
