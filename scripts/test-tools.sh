#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine with Go, as root:
# Debian packages, then the local Sigstore stack and cosign, pinned. Skips what is present,
# so a second run costs a few seconds. Called by .ci/run and scripts/bench-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v git  >/dev/null || need+=(git)        # the example's checkout and git http-backend in tests
command -v gcc  >/dev/null || need+=(gcc libc6-dev)  # the race detector needs cgo
command -v make >/dev/null || need+=(make)
command -v curl >/dev/null || need+=(curl ca-certificates)  # action/install.sh's test
command -v docker-registry >/dev/null || need+=(docker-registry)  # distribution 2.8: a registry without the referrers API
[ -x /usr/bin/time ] || need+=(time)                  # make bench
command -v unshare >/dev/null || need+=(util-linux)   # the Sigstore stack runs in a private network namespace
command -v ip >/dev/null || need+=(iproute2)          # ... whose loopback the tests bring up
[ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)   # Trillian's database, under Rekor v1
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's docker-registry ships a service listening on all interfaces: never start it,
  # nor MariaDB's (tests run their own on 127.0.0.1 and a unix socket).
  created=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created=1
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}"
  if [ -n "$created" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
command -v go >/dev/null || { echo "test-tools: Go is required (the README's first requirement)"; exit 1; }
go version

# Fail early and clearly if a module cannot be fetched, instead of inside the test run.
go mod download

# The local Sigstore stack of the integration tier, pinned (newer rekor-tiles needs Go 1.27;
# v2.3.0 rejects DSSE entries), and cosign v2, the reference verifier. ~10 min to build on
# 2 cores from a cold cache; skipped when present.
gobin=$(go env GOPATH)/bin
tool() { [ -x "$gobin/$1" ] || GOFLAGS= go install "$2"; }
tool fulcio github.com/sigstore/fulcio@v1.8.8
tool timestamp-server github.com/sigstore/timestamp-authority/cmd/timestamp-server@v1.2.9
tool posix github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix@v2.2.1
tool cosign github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
tool actionlint github.com/rhysd/actionlint/cmd/actionlint@v1.7.12  # every workflow in the repository
# Rekor v1 on Trillian (cosign's classic keyless format needs its signed entry timestamps);
# the tests read Trillian's MySQL schema from the module cache. ~7 min to build cold.
tool trillian_log_server github.com/google/trillian/cmd/trillian_log_server@v1.8.0
tool trillian_log_signer github.com/google/trillian/cmd/trillian_log_signer@v1.8.0
tool createtree github.com/google/trillian/cmd/createtree@v1.8.0
tool rekor-server github.com/sigstore/rekor/cmd/rekor-server@v1.5.4
(cd "$(mktemp -d)" && GOFLAGS= go mod download github.com/google/trillian@v1.8.0)
# cosign v3 as well, installed as cosign3 beside v2 (both must accept relay's signatures).
if [ ! -x "$gobin/cosign3" ]; then
  tmp=$(mktemp -d); GOFLAGS= GOBIN=$tmp go install github.com/sigstore/cosign/v3/cmd/cosign@v3.1.3
  mv "$tmp/cosign" "$gobin/cosign3"; rm -rf "$tmp"
fi

