#!/usr/bin/env bash
# Node.js for the e2e suite (e2e/, run by `make test`).
#
#   scripts/node.sh ensure   install Debian's nodejs and npm packages when npm
#                            is missing (as root, or through sudo), then check
#                            that Node.js is recent enough for e2e/package.json
#
# A machine that has Node.js from elsewhere (nodesource, nvm) keeps it.
set -euo pipefail

MIN_MAJOR=18 # e2e/package.json's engines.node

die() {
  echo "node.sh: $*" >&2
  exit 1
}

install_node() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
      die "npm not found and not root (no sudo either); install Node.js $MIN_MAJOR or later with npm, and retry"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "npm not found and apt-get is unavailable; install Node.js $MIN_MAJOR or later with npm, and retry"
  echo "node.sh: npm not found; installing Debian's nodejs and npm packages" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm >&2
}

ensure() {
  command -v npm >/dev/null 2>&1 || install_node
  command -v npm >/dev/null 2>&1 || die "npm is still not on PATH after installing it"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge "$MIN_MAJOR" ] ||
    die "Node.js $(node --version) is too old: the e2e suite needs $MIN_MAJOR or later"
}

case "${1:-}" in
ensure) ensure ;;
*) die "usage: scripts/node.sh ensure" ;;
esac
