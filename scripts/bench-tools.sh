#!/usr/bin/env bash
# Installs what `make bench` compares relay with, pinned: crane and regctl and the
# distribution v3 registry from the Go module proxy, skopeo, docker-registry and GNU time from Debian.
set -euo pipefail
export GOFLAGS=
go install github.com/google/go-containerregistry/cmd/crane@v0.22.1
go install github.com/regclient/regclient/cmd/regctl@v0.11.7
go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2   # ~2.5 min to build
if ! command -v skopeo >/dev/null || ! command -v docker-registry >/dev/null || [ ! -x /usr/bin/time ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo docker-registry time
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
