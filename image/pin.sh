#!/usr/bin/env bash
# Prints the pins for image/Dockerfile: the base image's index digest and the checksums of
# an actions/runner release. Needs network access to the registry and to GitHub.
#   image/pin.sh [RUNNER_VERSION] [BASE_TAG]
set -euo pipefail
ver=${1:-2.335.1}; base=${2:-debian:bookworm-slim}
echo "BASE=${base}@$(crane digest "$base")"
for a in x64 arm64; do
  f="actions-runner-linux-${a}-${ver}.tar.gz"
  curl -fsSL "https://github.com/actions/runner/releases/download/v${ver}/${f}" | sha256sum | sed "s/-\$/${f}/"
done
