#!/usr/bin/env bash
# What the tests run for real besides node: redis-server (global rate limits). Installed from
# Debian's packages when missing; runs before every `npm test` (instant when present).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then exit 0; fi
echo "meshgate tests: installing redis-server (Debian package) ..." >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "meshgate tests need redis-server: install it (apt-get install redis-server) and run npm test again" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq redis-server >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null; }
# The package may start a system instance; the tests start their own on free ports.
($SUDO service redis-server stop || true) >/dev/null 2>&1
