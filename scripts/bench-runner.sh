#!/usr/bin/env bash
# Measures `relay runner` from relay's exec to the exec of the Actions runner (fake GitHub API
# on loopback, fake runner) and appends a section to the report.
#   scripts/bench-runner.sh REPORT [ROUNDS]
set -euo pipefail
report=$1; rounds=${2:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(cd "$root/cmd/relay" && go test -tags integration -run '^$' -bench '^BenchmarkRunnerStartToExec$' -benchtime "${rounds}x" .)
echo "$out"
ms=$(echo "$out" | awk '/^BenchmarkRunnerStartToExec/ {for (i = 2; i <= NF; i++) if ($i == "start-to-exec-ms") print $(i-1)}')
[ -n "$ms" ] || { echo "bench-runner: no result" >&2; exit 1; }
case $report in /*) ;; *) report="$root/$report";; esac
{
  echo
  echo "## relay runner: start to the runner's exec"
  echo
  echo "Produced by \`make bench\` (\`scripts/bench-runner.sh docs/benchmarks.md $rounds\`, which runs \`BenchmarkRunnerStartToExec\`"
  echo "in cmd/relay) on $(date -u +%Y-%m-%d), $(nproc) cores; median of $rounds rounds. From relay's exec to the exec of run.sh:"
  echo "process start, a GitHub App JWT and installation token, the JIT registration, the scrubbed child start; the GitHub"
  echo "API is a fake on loopback, so its latency (tens to hundreds of ms against api.github.com) is not in the figure."
  echo
  echo "| measure | median |"
  echo "|---|---|"
  echo "| relay start to run.sh exec | $ms ms |"
  echo
  echo "Target from issue 5/6: at most 1 s."
} >> "$report"
