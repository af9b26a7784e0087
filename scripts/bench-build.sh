#!/usr/bin/env bash
# Build benchmarks (issue 3/6): relay's local builder against `ko build` on the same Go main
# (examples/hello), the same two-platform base (about 300 MiB per platform, in the same
# registry) and the same registry (Debian's distribution 2.8 on 127.0.0.1), in the same run;
# and the layering alone (binaries already built) against `crane append` + `crane mutate` +
# `crane index append`.
#   scripts/bench-build.sh BIN REPORT [ROUNDS]
# Appends a section to REPORT. ko comes from `go install github.com/google/ko@v0.19.1`
# (scripts/bench-tools.sh); a missing peer is reported, never silently skipped.
set -euo pipefail
bin=$(realpath "$1"); report=$2; rounds=${3:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
cleanup() { [ -e "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export PATH="$PATH:$(go env GOPATH)/bin"
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
command -v docker-registry >/dev/null || { echo "bench-build: docker-registry is not installed: run scripts/bench-tools.sh" >&2; exit 1; }
command -v ko >/dev/null || echo "bench-build: ko is not installed (go install github.com/google/ko@v0.19.1)" >&2
command -v crane >/dev/null || { echo "bench-build: crane is not installed: run scripts/bench-tools.sh" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/data}}
http: {addr: 127.0.0.1:$port, secret: bench}
YML
docker-registry serve "$work/config.yml" >"$work/log" 2>&1 & echo $! > "$work/pid"
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
reg=127.0.0.1:$port
(cd "$root" && go run ./internal/cmd/benchimg -ref "$reg/base/app:v1" -platforms 2 -layers 6 -size $((300<<20)) -seed 7 >/dev/null)
base="$reg/base/app:v1@$(crane digest --insecure "$reg/base/app:v1")"

# The example as a tagged git repository, relay.yaml pointing at the bench registry and base.
src=$work/hello
cp -r "$root/examples/hello" "$src"
git -C "$src" init -q -b main && git -C "$src" add -A
GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@example.com GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@example.com \
  git -C "$src" commit -q -m bench && git -C "$src" tag v0.1.0
cat > "$src/relay.yaml" <<YML
version: 1
source: {repo: $src, ref: v0.1.0}
builder: {kind: local, registry: REG/build}
images:
  - name: hello
    platforms: [linux/amd64, linux/arm64]
    local: {base: $base, go: {main: .}}
    targets: [$reg/acme/hello]
release: {target: dir, dir: $work/dist}
YML
(cd "$src" && go build -mod=vendor -o /dev/null . && GOARCH=arm64 go build -mod=vendor -o /dev/null .) # both toolchains' caches warm

# The two builds as scripts, so /usr/bin/time measures each whole: DEST is the repository prefix.
cat > "$work/relay-build" <<SH
#!/bin/sh
set -e
sed "s|registry: REG/build|registry: \$1|" "$src/relay.yaml" > "$work/relay.yaml"
cd "$src" && exec "$bin" run --config "$work/relay.yaml" --state "$work/state.json" --restart --only checkout,build --log-level error
SH
cat > "$work/ko-build" <<SH
#!/bin/sh
cd "$src" && KO_DOCKER_REPO=\$1 KO_DEFAULTBASEIMAGE=$base GOFLAGS=-mod=vendor exec ko build --bare --platform=linux/amd64,linux/arm64 --insecure-registry .
SH
# The layering alone, crane's way: the binaries relay would build, as one-file layers, appended
# per platform to the base (its layers mounted), the entrypoint set, the two joined in an index.
for a in amd64 arm64; do
  mkdir -p "$work/layer-$a"
  (cd "$src" && CGO_ENABLED=0 GOOS=linux GOARCH=$a go build -mod=vendor -trimpath -ldflags='-s -w -buildid=' -o "$work/layer-$a/hello" .)
  tar -C "$work/layer-$a" -cf "$work/hello-$a.tar" hello
done
cat > "$work/crane-layer" <<SH
#!/bin/sh
set -e
for a in amd64 arm64; do
  crane --insecure --platform linux/\$a append -b $base -f $work/hello-\$a.tar -t \$1/hello:\$a
  crane --insecure mutate \$1/hello:\$a --entrypoint /hello -t \$1/hello:\$a
done
crane --insecure index append -m \$1/hello:amd64 -m \$1/hello:arm64 -t \$1/hello:v0.1.0
SH
chmod +x "$work/relay-build" "$work/ko-build" "$work/crane-layer"
timeit() { /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { echo "FAILED: $*" >&2; cat "$work/err" >&2; return 1; }; cat "$work/t"; }

: > "$work/rows"
for i in $(seq "$rounds"); do
  warm "$bin"
  rm -rf "$work/cache" # a fresh runner has no binary cache: fresh runs both go builds
  t=$(timeit "$work/relay-build" "$reg/r$i/build"); echo "relay fresh $t" >> "$work/rows"
  t=$(timeit "$work/relay-build" "$reg/r$i/build"); echo "relay rebuild $t" >> "$work/rows"
  # Binaries cached, new repository: what is left is checkout, layering and the push.
  t=$(timeit "$work/relay-build" "$reg/l$i/build"); echo "relay layer $t" >> "$work/rows"
  t=$(timeit "$work/crane-layer" "$reg/c$i/crane"); echo "crane layer $t" >> "$work/rows"
  if command -v ko >/dev/null; then
    t=$(timeit "$work/ko-build" "$reg/k$i/ko"); echo "ko fresh $t" >> "$work/rows"
    t=$(timeit "$work/ko-build" "$reg/k$i/ko"); echo "ko rebuild $t" >> "$work/rows"
  fi
done
med() { awk -v t="$1" -v k="$2" -v f="$3" '$1==t && $2==k {print $f}' "$work/rows" | median; }
{
  echo
  echo "## relay's local build on a registry base against ko build"
  echo
  echo "Produced by \`scripts/bench-build.sh bin/relay docs/benchmarks.md $rounds\` on $(date -u +%Y-%m-%d), $(nproc) cores; medians of $rounds rounds."
  echo "The same Go main (examples/hello, vendored), the same two-platform base (linux/amd64 and linux/arm64, 6 layers of"
  echo "pseudo-random data, about 300 MiB per platform) in the same registry (Debian's distribution 2.8 on 127.0.0.1), Go's"
  echo "build cache warm for both architectures. *fresh*: into a repository that has nothing (the base's layers are mounted"
  echo "across repositories), relay's binary cache empty; *rebuild*: the same build again into the same repository (everything"
  echo "already there; relay reuses the binaries it built from the same commit, ko runs go build again). relay runs"
  echo "\`relay run --restart --only checkout,build\` (clone, both \`go build\`s, push); ko runs \`ko build --bare --platform=linux/amd64,linux/arm64\`."
  echo "Peak RSS is \`/usr/bin/time\`'s, of the whole command, \`go build\` included. ko: $(ko version 2>/dev/null || echo missing)."
  echo
  echo "| build | relay wall (s) | ko wall (s) | relay/ko | relay peak RSS (MiB) | ko peak RSS (MiB) |"
  echo "|---|---|---|---|---|---|"
  for k in fresh rebuild; do
    rw=$(med relay $k 3); kw=$(med ko $k 3); rm=$(med relay $k 4); km=$(med ko $k 4)
    ratio=$(awk -v a="$rw" -v b="$kw" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }')
    echo "| $k | $rw | ${kw:--} | $ratio | $(awk -v m="$rm" 'BEGIN{printf "%.0f", m/1024}') | $( [ -n "$km" ] && awk -v m="$km" 'BEGIN{printf "%.0f", m/1024}' || echo -) |"
  done
  echo
  echo "The layering alone, binaries already built: relay the same command into a new repository with its binary cache warm"
  echo "(checkout, layering, push; no \`go build\` runs, so its peak RSS is relay's own); crane: per platform \`crane --platform P"
  echo "append\` of a one-file layer holding the same binary onto the same base (layers mounted) and \`crane mutate --entrypoint\`,"
  echo "then \`crane index append\` of the two (five processes; peak RSS is the largest). crane: $(crane version 2>/dev/null || echo missing)."
  echo
  echo "| layering | relay wall (s) | crane wall (s) | relay/crane | relay peak RSS (MiB) | crane peak RSS (MiB) |"
  echo "|---|---|---|---|---|---|"
  rw=$(med relay layer 3); cw=$(med crane layer 3); rm=$(med relay layer 4); cm=$(med crane layer 4)
  ratio=$(awk -v a="$rw" -v b="$cw" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }')
  echo "| new repository | $rw | $cw | $ratio | $(awk -v m="$rm" 'BEGIN{printf "%.0f", m/1024}') | $(awk -v m="$cm" 'BEGIN{printf "%.0f", m/1024}') |"
} >> "$report"
