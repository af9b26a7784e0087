#!/usr/bin/env bash
# Copy benchmarks (issue 2/6): relay copy against crane, regctl and skopeo on the same
# generated images between two local distribution registries, in the same run.
#   scripts/bench-copy.sh BIN REPORT [ROUNDS]
# Appends a section to REPORT. Peers come from pinned `go install`s and Debian (see
# scripts/bench-tools.sh); missing ones are reported as missing, never silently skipped.
set -euo pipefail
bin=$(realpath "$1"); report=$2; rounds=${3:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
# Registries start in command substitutions (subshells), so their pid files, not a shell
# array, say what to stop.
cleanup() { for f in "$work"/*/pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export PATH="$PATH:$(go env GOPATH)/bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_registry() { # kind(debian|v3) name -> prints host:port
  local kind=$1 nm=$2 port; port=$(free_port)
  mkdir -p "$work/$nm"
  cat > "$work/$nm/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/$nm/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port, secret: bench}
YML
  local cmd=docker-registry; [ "$kind" = v3 ] && cmd=registry
  "$cmd" serve "$work/$nm/config.yml" >"$work/$nm/log" 2>&1 & echo $! > "$work/$nm/pid"
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
  echo "127.0.0.1:$port"
}
stop_registry() { kill "$(cat "$work/$1/pid")" 2>/dev/null || true; rm -rf "${work:?}/${1:?}"; }
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
timeit() { # command...; prints wall seconds and max RSS KiB, the program warm (scripts/lib.sh),
  # or cold with cold=1: its file evicted, as for the first run in a fresh runner container
  if [ -n "${cold:-}" ]; then evict "$(command -v "$1")"; else warm "$1"; fi
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { echo "FAILED: $*" >&2; cat "$work/err" >&2; return 1; }
  cat "$work/t"
}
regs_cpu() { # registry names... -> their CPU in clock ticks (user + system)
  local t=0 n; for n in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$(cat "$work/$n/pid")/stat"))); done; echo "$t"; }
machine_cpu() { awk '/^cpu /{print $2+$3+$4+$7+$8, $6}' /proc/stat; } # busy ticks, iowait ticks
hz=$(getconf CLK_TCK)
# ratio A B -> A/B to two places, or ZERO (default -) when B is 0. Values go in with -v: gawk
# folds a constant division by zero at parse time, even in a branch that never runs.
ratio() { awk -v a="$1" -v b="$2" -v z="${3:--}" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print z }'; }

tools=(relay)
for t in crane regctl skopeo; do command -v "$t" >/dev/null && tools+=("$t") || echo "bench-copy: $t is not installed" >&2; done
copy_cmd() { # tool src dst
  case $1 in
    relay)  echo "$bin copy --log-level error $2 $3" ;;
    crane)  echo "crane copy --insecure $2 $3:bench" ;;
    regctl) echo "regctl image copy --referrers --host reg=${3%%/*},tls=disabled --host reg=${2%%/*},tls=disabled $2 $3:bench" ;;
    skopeo) echo "skopeo copy --all --src-tls-verify=false --dest-tls-verify=false docker://$2 docker://$3:bench" ;;
  esac
}

command -v docker-registry >/dev/null || { echo "bench-copy: docker-registry (Debian's distribution 2.8) is not installed: run scripts/bench-tools.sh" >&2; exit 1; }
kinds=(debian); command -v registry >/dev/null && kinds+=(v3) || echo "bench-copy: distribution v3 (registry) is not installed" >&2
{
  echo
  echo "## relay copy against crane, regctl and skopeo"
  echo
  echo "Produced by \`make bench\` (\`scripts/bench-copy.sh bin/relay docs/benchmarks.md $rounds\`); medians of $rounds rounds,"
  echo "a source and a fresh destination registry of the same kind on 127.0.0.1 for every copy, generated images of"
  echo "pseudo-random (incompressible) layers. \`/usr/bin/time\` resolves 10 ms, so no-op ratios are coarse."
  echo "Every program runs warm from the same state: its file is evicted from the page cache and the program started once (its version command) before each measured run (scripts/lib.sh), since how the kernel last read an executable changes its mapped text, and so its peak RSS, by up to 40 MiB."
  echo "Peers: $(crane version 2>/dev/null | head -1 | sed 's/^/crane /'), $(regctl version --format '{{.VCSTag}}' 2>/dev/null | sed 's/^/regctl /'), $(skopeo --version 2>/dev/null)."
  echo "Copies into several registries at once are bound by the destination registries, not by relay: each hashes every byte (Debian's Go 1.19 build without SHA-NI), writes it in 32 KiB calls and fsyncs every upload request (distribution v3 also each chunk), on the same $(nproc) cores and one disk. For (d) the busy row of each kind says where the machine's time went, and the floor row the wall time a client that cost no CPU at all would need: the machine's busy CPU-seconds less relay's, over the cores."
  echo "relay copies referrers and cosign's classic tags as well (none exist here, but it looks for them). skopeo runs without --preserve-digests, which it refuses for these OCI indexes (1.9.3), so it may rewrite the index."
  echo
  echo "| registry | image | tool | wall (s) | vs fastest peer | peak RSS (MiB) |"
  echo "|---|---|---|---|---|---|"
} >> "$work/section.md"

for kind in "${kinds[@]}"; do
  src=$(start_registry "$kind" "src-$kind")
  a=$(go run "$root/internal/cmd/benchimg" -ref "$src/bench/a:src" -platforms 1 -layers 12 -size $((1<<30)) -seed 1)
  b=$(go run "$root/internal/cmd/benchimg" -ref "$src/bench/b:src" -platforms 4 -layers 6 -size $((200<<20)) -seed 2)
  for img in a b; do
    ref=${!img}
    declare -A wall=() rss=()
    for t in "${tools[@]}"; do
      for r in $(seq "$rounds"); do
        # A fresh destination registry each time: no tool may mount or skip blobs that an
        # earlier copy left there (skopeo's blob-info cache would).
        dst=$(start_registry "$kind" "dst-$kind-$img-$t-$r")
        read -r w m < <(timeit $(copy_cmd "$t" "$ref" "$dst/$t/$img"))
        wall[$t]+="$w"$'\n'; rss[$t]+="$m"$'\n'
        # (c) the same copy again: the destination has everything.
        read -r w m < <(timeit $(copy_cmd "$t" "$ref" "$dst/$t/$img"))
        wall[$t-noop]+="$w"$'\n'; rss[$t-noop]+="$m"$'\n'
        if [ "$t" = relay ]; then
          read -r w m < <(cold=1 timeit $(copy_cmd "$t" "$ref" "$dst/$t/$img"))
          wall[relay-cold]+="$w"$'\n'; rss[relay-cold]+="$m"$'\n'
        fi
        stop_registry "dst-$kind-$img-$t-$r"
      done
    done
    for suffix in "" "-noop"; do
      best=""
      for t in "${tools[@]}"; do
        [ "$t" = relay ] && continue
        m=$(printf '%s' "${wall[$t$suffix]}" | median); [ -z "$best" ] || awk "BEGIN{exit !($m < $best)}" && best=$m
      done
      label="$img ($([ "$img" = a ] && echo '12 layers, 1 GiB' || echo '4 platforms x 200 MiB'))"; [ -n "$suffix" ] && label="$label, again (no-op)"
      for t in "${tools[@]}"; do
        m=$(printf '%s' "${wall[$t$suffix]}" | median)
        ratio="-"; [ -n "$best" ] && ratio=$(ratio "$m" "$best" "- (peer under 10 ms)")
        echo "| $kind | $label | $t | $m | $ratio | $(( $(printf '%s' "${rss[$t$suffix]}" | median | cut -d. -f1) / 1024 )) |" >> "$work/section.md"
      done
      if [ -n "$suffix" ]; then
        m=$(printf '%s' "${wall[relay-cold]}" | median)
        echo "| $kind | $label, relay's first run: its file evicted from the page cache | relay (cold) | $m | $(ratio "$m" "$best" "- (peer under 10 ms)") | $(( $(printf '%s' "${rss[relay-cold]}" | median | cut -d. -f1) / 1024 )) |" >> "$work/section.md"
      fi
    done
    unset wall rss
  done
  # (d) one source to two destination registries: relay reads once and uploads in parallel;
  # the peer does two sequential crane copies.
  declare -A two=()
  for r in $(seq "$rounds"); do
    d1=$(start_registry "$kind" "two1-$kind-$r"); d2=$(start_registry "$kind" "two2-$kind-$r")
    # Where the machine's time goes during the copy: every CPU-second the registries and the
    # kernel spend is one relay cannot save, so (busy - relay's own) / cores is the wall time
    # of a client that costs nothing.
    regs=("src-$kind" "two1-$kind-$r" "two2-$kind-$r")
    r0=$(regs_cpu "${regs[@]}"); read -r b0 io0 < <(machine_cpu)
    warm "$bin"
    /usr/bin/time -f '%e %M %U %S' -o "$work/t" "$bin" copy --log-level error "$a" "$d1/relay/a" "$d2/relay/a" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    r1=$(regs_cpu "${regs[@]}"); read -r b1 io1 < <(machine_cpu)
    read -r w m u sy < "$work/t"
    two[relay]+="$w"$'\n'; two[relay-rss]+="$m"$'\n'
    two[busy]+="$(awk -v b=$((b1 - b0)) -v w="$w" -v hz="$hz" -v n="$(nproc)" 'BEGIN{ if (w > 0) printf "%.0f", b/(w*hz*n)*100; else print 0 }')"$'\n'
    two[self]+="$(awk "BEGIN{printf \"%.2f\", $u+$sy}")"$'\n'
    two[regs]+="$(awk "BEGIN{printf \"%.2f\", ($r1-$r0)/$hz}")"$'\n'
    two[iowait]+="$(awk "BEGIN{printf \"%.2f\", ($io1-$io0)/$hz}")"$'\n'
    two[floor]+="$(awk "BEGIN{printf \"%.2f\", (($b1-$b0)/$hz - ($u+$sy))/$(nproc)}")"$'\n'
    stop_registry "two1-$kind-$r"; stop_registry "two2-$kind-$r"
    if command -v crane >/dev/null; then
      d1=$(start_registry "$kind" "two1-$kind-$r"); d2=$(start_registry "$kind" "two2-$kind-$r")
      warm crane
      s=$(date +%s.%N)
      crane copy --insecure "$a" "$d1/crane/a:bench" >/dev/null 2>&1 && crane copy --insecure "$a" "$d2/crane/a:bench" >/dev/null 2>&1
      two[crane]+="$(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $s}")"$'\n'
      stop_registry "two1-$kind-$r"; stop_registry "two2-$kind-$r"
    fi
  done
  rw=$(printf '%s' "${two[relay]}" | median); cw2=$(printf '%s' "${two[crane]:-}" | median)
  ratio="-"; [ -n "$cw2" ] && ratio=$(ratio "$rw" "$cw2")
  echo "| $kind | a to two registries at once | relay | $rw | $ratio of two sequential crane copies | $(( $(printf '%s' "${two[relay-rss]}" | median | cut -d. -f1) / 1024 )) |" >> "$work/section.md"
  [ -n "$cw2" ] && echo "| $kind | a to two registries, one after the other | crane x2 | $cw2 | 1.00 | - |" >> "$work/section.md"
  fl=$(printf '%s' "${two[floor]}" | median)
  flr="-"; [ -n "$cw2" ] && flr=$(ratio "$fl" "$cw2")
  echo "| $kind | a to two registries at once: all $(nproc) cores busy $(printf '%s' "${two[busy]}" | median | cut -d. -f1) % of the time (iowait $(printf '%s' "${two[iowait]}" | median) s); CPU of the three registries $(printf '%s' "${two[regs]}" | median) s, relay's own $(printf '%s' "${two[self]}" | median) s | - | - | - | - |" >> "$work/section.md"
  echo "| $kind | a to two registries at once, floor for a client costing no CPU: (machine busy - relay) / $(nproc) cores | - | $fl | $flr of two sequential crane copies | - |" >> "$work/section.md"
  unset two

  # The ceiling: one raw 1 GiB blob streamed GET -> PUT with curl.
  go run "$root/internal/cmd/benchimg" -ref "$src/bench/ceil:src" -platforms 1 -layers 1 -size $((1<<30)) -seed 3 >/dev/null
  blob=$(curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$src/v2/bench/ceil/manifests/src" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"])')
  cw=()
  dst=$(start_registry "$kind" "dst-$kind-ceiling")
  for r in $(seq "$rounds"); do
    loc=$(curl -fsi -X POST "http://$dst/v2/ceil/r$r/blobs/uploads/" | awk -F': ' 'tolower($1)=="location" {print $2}' | tr -d '\r')
    case $loc in http*) ;; *) loc="http://$dst$loc";; esac
    sep='?'; case $loc in *\?*) sep='&';; esac
    s=$(date +%s.%N)
    curl -fs "http://$src/v2/bench/ceil/blobs/$blob" | curl -fs -T - -H 'Content-Type: application/octet-stream' "$loc${sep}digest=$blob" >/dev/null
    cw+=("$(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $s}")")
  done
  echo "| $kind | ceiling: one 1 GiB blob, curl GET piped into curl PUT | curl | $(printf '%s\n' "${cw[@]}" | median) | - | - |" >> "$work/section.md"
  stop_registry "dst-$kind-ceiling"; stop_registry "src-$kind"
done
case $report in /*) ;; *) report="$root/$report";; esac
cat "$work/section.md" >> "$report"
cat "$work/section.md"
