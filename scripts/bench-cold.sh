#!/usr/bin/env bash
# Times a cold start, with empty module and build caches: `make build`, then the README's
# first command, in a clean copy of the tree; appends a section to the report. Needs ~4 GiB
# of scratch space (the caches), removed afterwards.
#   scripts/bench-cold.sh REPORT
set -euo pipefail
report=$1
root=$(cd "$(dirname "$0")/.." && pwd)
case $report in /*) ;; *) report="$root/$report";; esac
scratch=$(mktemp -d); trap 'chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT
git -C "$root" worktree add -q --detach "$scratch/tree" HEAD
trap 'git -C "$root" worktree remove --force "$scratch/tree"; chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT
measure() { # NAME COMMAND: fresh caches, then /usr/bin/time
  rm -rf "$scratch/mod" "$scratch/cache" "$scratch/tree/bin" "$scratch/tree/examples/hello/.relay"
  (cd "$scratch/tree" && GOMODCACHE=$scratch/mod GOCACHE=$scratch/cache GOFLAGS=-modcacherw \
    /usr/bin/time -f "%e %U %S %M" -o "$scratch/$1.time" bash -c "$2" > "$scratch/$1.log" 2>&1)
  read -r wall user sys rss < "$scratch/$1.time"
  mods=$(grep -c 'go: downloading' "$scratch/$1.log" || true)
  printf '| %s | %.0f s | %.0f s + %.0f s | %d MiB | %s |\n' "$3" "$wall" "$user" "$sys" $((rss / 1024)) "$mods"
}
build=$(measure build 'make build' '`make build`')
readme=$(measure readme 'make build && cd examples/hello && ../../bin/relay run --local' "the README's first command: \`make build && cd examples/hello && ../../bin/relay run --local\`")
{
  echo
  echo "## Cold start: the README's first command and \`make build\` with empty caches"
  echo
  echo "Produced by \`make bench\` (\`scripts/bench-cold.sh docs/benchmarks.md\`) on $(date -u +%Y-%m-%d), $(nproc) cores, $(go version | awk '{print $3}'),"
  echo "the tree at $(git -C "$root" rev-parse --short HEAD), empty GOMODCACHE and GOCACHE, modules from the configured proxy."
  echo
  echo "| command | wall | CPU (user + sys) | peak RSS | modules downloaded |"
  echo "|---|---|---|---|---|"
  echo "$build"
  echo "$readme"
  echo
  echo "Issue 6/6's target for a cold \`make build\`: at most 4 minutes on 2 cores."
} >> "$report"
