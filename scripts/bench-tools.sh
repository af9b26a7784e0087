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
