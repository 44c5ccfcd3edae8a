#!/usr/bin/env bash
# Install the services the tests start for real (each test fixture starts its own instance):
# Debian's docker-registry (the CNCF distribution registry), and slurm-wlm with munge (a one-node
# Slurm cluster). Needs root, like the engine.
set -euo pipefail

missing=()
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
[ -x /usr/sbin/slurmctld ] || missing+=(slurm-wlm)
[ -x /usr/sbin/munged ] || missing+=(munge)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)  # the tests' second Docker engine gets its own bridge
command -v tmux >/dev/null 2>&1 || missing+=(tmux)  # test_serve drives `mf chat` in a real terminal
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # test_ui drives `mf ui` in a real browser (Playwright)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "ensure-services: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the packages start their own daemons; the tests start theirs on free ports
systemctl disable --now docker-registry >/dev/null 2>&1 || service docker-registry stop >/dev/null 2>&1 || true
pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true
for daemon in slurmctld slurmd; do
  service "$daemon" stop >/dev/null 2>&1 || true
done
