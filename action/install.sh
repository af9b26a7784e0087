#!/usr/bin/env bash
# Installs relay for `uses: relaydev/relay@v1` (action.yml): the release binary for the
# runner's OS and architecture, checked against the SHA-256 sums pinned in this action
# (action/sha256sums/VERSION) — never against a checksum fetched next to the binary — kept
# in the tool cache, and put on PATH. A relay of that version already on PATH (the relay
# runner image has one) is used as it is.
#
# Inputs (environment): RELAY_VERSION (default: action/VERSION, this action's own release),
# RUNNER_OS, RUNNER_ARCH, RUNNER_TOOL_CACHE, RUNNER_TEMP, GITHUB_PATH, GITHUB_OUTPUT, and
# RELAY_DOWNLOAD_URL (default https://github.com/relaydev/relay/releases/download: a mirror
# or GitHub Enterprise Server). Outputs: version, path, source (path|cache|download).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fail() { echo "::error title=relay install::$*" >&2; exit 1; }

version=${RELAY_VERSION:-}
if [ -z "$version" ]; then
  version=$(tr -d ' \n\r' < "$here/VERSION")
fi
[ "$version" = unreleased ] && fail "this commit of the action is no release (action/VERSION says unreleased), so it pins no checksums: use relaydev/relay@v1 or @vX.Y.Z"
case "$version" in
  v[0-9]*.[0-9]*.[0-9]*) ;;
  [0-9]*.[0-9]*.[0-9]*) version="v$version" ;;
  *) fail "version '$version' is not a release version like v1.2.3: set the action's 'version' input to one (or leave it empty for this action's own release)" ;;
esac
sums="$here/sha256sums/$version"
[ -f "$sums" ] || fail "relay $version has no SHA-256 sums pinned in this action ($(ls "$here/sha256sums" 2>/dev/null | tr '\n' ' ')): use relaydev/relay@$version, whose action pins them, or one of the versions listed"

case "${RUNNER_OS:-$(uname -s)}" in
  Linux | linux) os=linux ;;
  macOS | Darwin | darwin) os=darwin ;;
  Windows | windows | MINGW* | MSYS*) os=windows ;;
  *) fail "unsupported runner OS '${RUNNER_OS:-$(uname -s)}': relay ships linux, darwin and windows binaries" ;;
esac
case "${RUNNER_ARCH:-$(uname -m)}" in
  X64 | x86_64 | amd64) arch=amd64 ;;
  ARM64 | aarch64 | arm64) arch=arm64 ;;
  *) fail "unsupported runner architecture '${RUNNER_ARCH:-$(uname -m)}': relay ships amd64 and arm64 binaries" ;;
esac
ext=""
[ "$os" = windows ] && ext=.exe
asset="relay-$os-$arch$ext"
want=$(awk -v a="$asset" '$2 == a || $2 == "*" a { print $1 }' "$sums")
[ -n "$want" ] || fail "$sums pins no sum for $asset"

sha256() {
  if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

output() { [ -n "${GITHUB_OUTPUT:-}" ] && echo "$1=$2" >> "$GITHUB_OUTPUT"; return 0; }
done_with() { # $1 binary, $2 how it was found
  output version "$version"
  output path "$1"
  output source "$2"
  echo "relay $version ($2): $1"
  exit 0
}

# The runner already has this relay (the relay runner image): use it.
if existing=$(command -v relay 2>/dev/null) && [ "$("$existing" --version 2>/dev/null || true)" = "relay $version" ]; then
  done_with "$existing" path
fi

cache=${RUNNER_TOOL_CACHE:?RUNNER_TOOL_CACHE is not set: run this inside a GitHub Actions job (or set it)}/relay/${version#v}/$arch
bin="$cache/relay$ext"
add_path() { [ -n "${GITHUB_PATH:-}" ] && echo "$cache" >> "$GITHUB_PATH"; return 0; }

# A cached copy is checked again: the tool cache is shared by every job on a runner.
if [ -f "$cache.complete" ] && [ -f "$bin" ]; then
  if [ "$(sha256 "$bin")" = "$want" ]; then
    add_path
    done_with "$bin" cache
  fi
  echo "::warning title=relay install::the cached $bin does not match its pinned sum: downloading it again"
fi

base=${RELAY_DOWNLOAD_URL:-https://github.com/relaydev/relay/releases/download}
tmp=$(mktemp -d "${RUNNER_TEMP:-/tmp}/relay-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
url="$base/$version/$asset"
proto='=https' # plain http only for a server on this machine (a test's, a local mirror's)
case "$base" in http://127.0.0.1:* | http://127.0.0.1/* | http://localhost:* | http://localhost/*) proto='=http' ;; esac
curl -fsSL --retry 3 --retry-connrefused --proto "$proto" --proto-redir '=https' -o "$tmp/$asset" "$url" ||
  fail "downloading $url failed: check the version exists as a release with the asset $asset"
got=$(sha256 "$tmp/$asset")
[ "$got" = "$want" ] || fail "$url has SHA-256 $got, but this action pins $want for it: refusing it (a tampered or replaced release asset)"

rm -rf "$cache" "$cache.complete"
mkdir -p "$cache"
mv "$tmp/$asset" "$bin"
chmod 0755 "$bin"
touch "$cache.complete"
add_path
done_with "$bin" download
