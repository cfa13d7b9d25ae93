#!/usr/bin/env sh
# Installs what the load test drives and compares against, from Debian's packages:
#   nginx (nginx-light where the release still has it), wrk (closed loop), hey (fixed rate),
#   h2load from nghttp2-client (HTTP/2; optional — the h2 scenario is skipped without it).
# The harness runs nginx from its own generated config and prefix; installing the package
# must never start the system's nginx service, so service starts are refused for the
# duration of the install (Debian's policy-rc.d convention) unless a policy already exists.
set -eu

if [ "$(id -u)" != "0" ]; then
  SUDO=sudo
else
  SUDO=
fi

missing() { ! command -v "$1" >/dev/null 2>&1; }

want=""
missing nginx && want="$want nginx"
missing wrk && want="$want wrk"
missing hey && want="$want hey"
missing h2load && want="$want h2load"
if [ -z "$want" ]; then
  echo "loadtest/setup.sh: nginx, wrk, hey and h2load are already installed"
  exit 0
fi
echo "loadtest/setup.sh: installing for:$want"

policy=/usr/sbin/policy-rc.d
made_policy=no
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, from meshgate loadtest/setup.sh: no service starts during install\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  made_policy=yes
fi
cleanup() { if [ "$made_policy" = yes ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT INT TERM

export DEBIAN_FRONTEND=noninteractive
# Other installs may hold the dpkg lock on a shared machine: wait for it rather than fail.
APT="$SUDO apt-get -y -q -o DPkg::Lock::Timeout=180"

install_one() {
  # $1: command that must exist afterwards; the rest: candidate packages, first that installs wins
  cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  for pkg in "$@"; do
    if $APT install --no-install-recommends "$pkg" >/dev/null 2>&1; then
      command -v "$cmd" >/dev/null 2>&1 && return 0
    fi
  done
  return 1
}

install_all() {
  ok=yes
  install_one nginx nginx-light nginx || ok=no
  install_one wrk wrk || ok=no
  install_one hey hey || ok=no
  # h2load is optional: failure here only skips the h2 scenario.
  install_one h2load nghttp2-client || true
  [ "$ok" = yes ]
}

if ! install_all; then
  echo "loadtest/setup.sh: install failed, refreshing package lists and retrying"
  $APT update >/dev/null
  install_all || { echo "loadtest/setup.sh: could not install nginx / wrk / hey" >&2; exit 1; }
fi

# The package may have left its own nginx running if a service manager ignored the policy;
# the harness never uses it, but say so rather than stop a service we did not start.
if command -v pgrep >/dev/null 2>&1 && pgrep -x nginx >/dev/null 2>&1; then
  echo "loadtest/setup.sh: note: an nginx is already running on this machine; the harness uses its own config and ports and leaves it alone"
fi

for c in nginx wrk hey h2load; do
  if command -v "$c" >/dev/null 2>&1; then echo "  $c: $(command -v "$c")"; else echo "  $c: missing"; fi
done
