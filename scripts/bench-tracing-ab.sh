#!/bin/bash
# A/B of a no-op relay copy and relay version between two relay binaries, paired runs with
# farm-bench: scripts/bench-tracing-ab.sh A_BINARY B_BINARY (docs/benchmarks.md, "Tracing off
# costs nothing"). Needs docker-registry, crane and farm-bench.
set -e
A=$(realpath "${1:?usage: $0 A_BINARY B_BINARY}"); B=$(realpath "${2:?usage: $0 A_BINARY B_BINARY}")
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cat > $dir/config.yml <<CFG
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $dir/data}}
http: {addr: 127.0.0.1:$port}
CFG
docker-registry serve $dir/config.yml >$dir/log 2>&1 &
pid=$!
trap 'kill $pid; rm -rf $dir' EXIT
for i in $(seq 50); do curl -sf http://127.0.0.1:$port/v2/ >/dev/null && break; sleep 0.1; done
reg=127.0.0.1:$port
(cd "$root" && go run ./internal/cmd/benchimg -ref $reg/src/app:v1 -platforms 4 -layers 3 -size $((32<<20)) >/dev/null)
src=$(crane digest $reg/src/app:v1)
"$A" copy $reg/src/app@$src $reg/dst/app >/dev/null 2>&1
echo "no-op relay copy $reg/src/app@$src -> $reg/dst/app, A = $A, B = $B"
farm-bench -n 30 --warmup 3 --vs "$B copy $reg/src/app@$src $reg/dst/app" -- "$A" copy $reg/src/app@$src $reg/dst/app
echo "relay version, A = $A, B = $B"
farm-bench -n 30 --warmup 3 --vs "$B version" -- "$A" version
