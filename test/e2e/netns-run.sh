#!/usr/bin/env bash
# Runs a command in a fresh network namespace that only this run can use:
# loopback plus one veth pair whose two ends both stay inside. Chromium only
# gathers ICE candidates on a machine with a default route, so the namespace
# gets one on its own test address (198.51.100.1, RFC 5737 documentation
# range). Nothing in here can reach the host's network or beyond, so the
# servers, Redis and the browser talk to each other only. Needs root.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "netns-run: the browser tests need root to create a network namespace (CI runs as root)" >&2
  exit 1
fi
exec unshare --net -- bash -c '
  set -euo pipefail
  ip link set lo up
  ip link add pd-e2e0 type veth peer name pd-e2e1
  ip addr add 198.51.100.1/32 dev pd-e2e0
  ip link set pd-e2e0 up
  ip link set pd-e2e1 up
  ip route add default dev pd-e2e0
  exec "$@"
' netns-run "$@"
