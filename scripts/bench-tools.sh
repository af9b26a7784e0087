#!/usr/bin/env bash
# Installs what `make bench` needs, pinned: what the tests need (scripts/test-tools.sh: the
# Sigstore stack, cosign, docker-registry, GNU time), then what relay is compared with: crane and
# regctl and the distribution v3 registry from the Go module proxy, skopeo from Debian, syft.
# Skips what is present.
set -euo pipefail
"$(dirname "$0")/test-tools.sh"
export GOFLAGS=
gobin=$(go env GOPATH)/bin
tool() { [ -x "$gobin/$1" ] || go install "$2"; }
tool crane github.com/google/go-containerregistry/cmd/crane@v0.22.1
tool ko github.com/google/ko@v0.19.1 # the build benchmark's peer (scripts/bench-build.sh)
tool regctl github.com/regclient/regclient/cmd/regctl@v0.11.7
tool registry github.com/distribution/distribution/v3/cmd/registry@v3.1.2   # ~2.5 min to build
if ! command -v skopeo >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends skopeo
fi
# syft's CLI, for the sign benchmark's hand-written chain. `go install syft@v1.57.0` fails on this
# proxy (it refuses 8 versions syft pins), so it is built in a throwaway module with the same
# replaces as relay's go.mod.
if ! command -v syft >/dev/null && [ ! -x "$(go env GOPATH)/bin/syft" ]; then
  m=$(mktemp -d); trap 'rm -rf "$m"' EXIT
  root=$(cd "$(dirname "$0")/.." && pwd)
  { echo "module syftcli"; echo; echo "go 1.26.8"; grep '^replace ' "$root/go.mod"; } > "$m/go.mod"
  (cd "$m" && GOFLAGS=-mod=mod go get github.com/anchore/syft/cmd/syft@v1.57.0 \
    && CGO_ENABLED=0 go build -o "$(go env GOPATH)/bin/syft" github.com/anchore/syft/cmd/syft)
fi
