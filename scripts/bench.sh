#!/usr/bin/env bash
# Measures `relay run --local` on the bundled example and writes a Markdown report.
#   scripts/bench.sh BIN REPORT [ROUNDS]
# Wall time and peak RSS come from GNU time (-v); the peak RSS is that of the largest process
# in the run's tree (relay itself, or a `go build` it starts). Medians over ROUNDS (default 5).
set -euo pipefail
bin=$(realpath "$1"); report=$(realpath -m "$2"); rounds=${3:-5}
[ -x /usr/bin/time ] || { echo "bench: GNU time is missing: apt-get install -y time" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r "$root/examples/hello" "$work/hello"; rm -rf "$work/hello/.relay" "$work/hello/dist"
cd "$work/hello"

measure() { # label, then the command; prints "seconds kib"
  /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>"$work/log.txt" || { cat "$work/log.txt" >&2; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
  echo "$wall $rss"
}
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
warm "$bin" # make build just wrote it: drop the folios that left in the page cache
# Warm-up: fills the Go build cache for both platforms, as on a developer's machine.
measure "$bin" run --local >/dev/null

# Every figure goes into one table: KEY holds the wall times, KEY-rss the peak RSS (KiB).
declare -A fig=()
record() { # key, then the command
  local key=$1 w r; shift
  read -r w r < <(measure "$@"); fig[$key]+="$w"$'\n'; fig[$key-rss]+="$r"$'\n'
}
row() { printf '| %s | %s | %s |\n' "$1" "$(printf '%s' "${fig[$2]}" | median)" "$(( $(printf '%s' "${fig[$2-rss]}" | median | cut -d. -f1) / 1024 ))"; }
for i in $(seq "$rounds"); do
  rm -rf .relay dist                      # a new sandbox, key and state: the whole pipeline, syft included
  record fresh "$bin" run --local
  record rerun "$bin" run --local --restart
  record resume "$bin" run --local
done
# Start-up: cold (the file evicted from the page cache, as in a fresh runner container) and
# warm (every later run); crane's for scale.
crane=$(command -v crane || true)
for i in $(seq "$rounds"); do
  evict "$bin"; record cold "$bin" version
  record warm "$bin" version
  if [ -n "$crane" ]; then warm "$crane"; record crane "$crane" version; fi
done
size=$(stat -c %s "$bin")
# Where the bytes go: the same build with its symbols, attributed per module.
syms=$work/relay-syms
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$syms" ./cmd/relay && go run ./internal/cmd/binsize -top 20 "$syms") > "$work/binsize.md"
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`make bench\` (\`scripts/bench.sh bin/relay docs/benchmarks.md\`) on $(date -u +%Y-%m-%d),"
  echo "$(nproc) cores, $(go version | awk '{print $3}'), relay $("$bin" version | head -1 | awk '{print $2}'). Medians of $rounds rounds; warm Go build cache."
  echo
  echo "## relay run --local on examples/hello (two platforms: linux/amd64, linux/arm64)"
  echo
  echo "| run | wall time (s) | peak RSS (MiB) |"
  echo "|---|---|---|"
  row "fresh: new sandbox, key and state (build, copy, sign, syft SBOMs, provenance, verify, release)" fresh
  row "re-run with --restart on the same sandbox (every step runs, every attestation is reused)" rerun
  row "resume of a completed state (every step skipped)" resume
  echo
  echo "Target from issue 1/6: under 10 s warm on a 2-core machine."
  echo "Peak RSS is the largest process of the run's tree: relay itself, or a \`go build\` it starts."
  echo
  echo "## Binary"
  echo
  echo "| binary | size |"
  echo "|---|---|"
  echo "| bin/relay (static, stripped, CGO_ENABLED=0) | $((size / 1024 / 1024)) MiB ($size bytes) |"
  echo
  echo "Start-up, which every no-op pays (syft's package graph initialises at start):"
  echo
  echo "| start-up | wall time (s) | peak RSS (MiB) |"
  echo "|---|---|---|"
  row "\`relay version\`, cold: the binary evicted from the page cache first" cold
  row "\`relay version\`, warm: run again" warm
  if [ -n "$crane" ]; then row "\`crane version\`, warm, for scale" crane; else echo "| \`crane version\` | crane is not installed (scripts/bench-tools.sh) | - |"; fi
  echo
  echo "Every run here starts from a page cache the kernel filled the way a cold start does (scripts/lib.sh says why):"
  echo "after a sequential read of the file it maps the text in larger folios and the same \`relay version\` shows up to"
  echo "107 MiB, none of it relay's own memory."
  echo
  echo "Where the bytes go: the file bytes of the binary's symbols (code, read-only and initialised data) per module,"
  echo "from \`go run ./internal/cmd/binsize\` on the same build with its symbols; the function tables and"
  echo "type links the runtime needs come on top, roughly in proportion."
  echo
  cat "$work/binsize.md"
} > "$report"
cat "$report"
