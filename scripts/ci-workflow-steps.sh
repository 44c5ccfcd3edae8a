#!/usr/bin/env bash
# Run the steps of .github/workflows/images.yml here, with the same Make targets, for one image:
# build, contract tests, push to a real registry (Debian's docker-registry on loopback), then the
# release job's signing and push of the manifest, and a check that the result verifies.
# usage: scripts/ci-workflow-steps.sh [PROVIDER] [FLAVOUR]   (default: gguf cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
provider=${1:-gguf}
flavour=${2:-cpu}

work=$(mktemp -d /tmp/mf-ci-steps.XXXXXX)
registry_pid=
address=
cleanup() {
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; fi
  # the tags naming this registry (its port dies with it) would keep superseded layers on disk
  if [ -n "$address" ]; then
    { docker images --format '{{.Repository}}:{{.Tag}}'; docker images --digests --format '{{.Repository}}@{{.Digest}}'; } \
      | grep -F "$address/" | grep -v -e ':<none>$' -e '@<none>$' | xargs -r docker rmi >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:0
YAML
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 100); do
  address=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$work/registry.log" | head -n 1 | awk '{print $3}') || true
  [ -n "$address" ] && break
  sleep 0.1
done
[ -n "$address" ] || { echo "ci-workflow-steps: the registry did not start" >&2; cat "$work/registry.log" >&2; exit 1; }

export XDG_CONFIG_HOME="$work/config" XDG_CACHE_HOME="$work/cache"
export MF_REGISTRY="$address/ci"
.venv/bin/mf images keygen --output "$work/keys" >/dev/null
export MF_SIGNING_KEY="$work/keys/modelforge-signing.key" MF_TRUSTED_KEYS="$work/keys/modelforge-signing.pub"

make image-"$provider" FLAVOUR="$flavour"
make test-image PROVIDER="$provider" FLAVOUR="$flavour"
make push-image PROVIDER="$provider" FLAVOUR="$flavour" ENTRY_OUT="$work/entry.json"
make release ENTRIES="$work/entry.json"
.venv/bin/mf images verify "$provider" --flavour "$flavour"
echo "ci-workflow-steps: $provider ($flavour) built, contract-tested, pushed, released and verified"
