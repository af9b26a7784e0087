#!/usr/bin/env bash
# Prints the base pin of relay.yaml and image/Dockerfile for an actions/runner release:
# the multi-platform index digest of ghcr.io/actions/actions-runner:VERSION. Needs crane and
# network access to ghcr.io. Put the line in both files (a test keeps them agreeing).
#   image/pin.sh 2.337.0
set -euo pipefail
ver=${1:?usage: image/pin.sh RUNNER_VERSION (the newest is on https://github.com/actions/runner/releases)}
ref=ghcr.io/actions/actions-runner:${ver}
echo "${ref}@$(crane digest "$ref")"
