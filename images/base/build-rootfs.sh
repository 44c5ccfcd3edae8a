#!/usr/bin/env bash
# Build a ModelForge base image from Debian packages: debootstrap a minimal bookworm with
# Python 3.11, trim it, add the unprivileged user `mf` (uid 1000) with a writable HOME, and
# `docker import` it. No registry is needed: the packages come from apt's configured mirror.
#
# usage: build-rootfs.sh runtime|build TAG
#   runtime  python3, venv and CA certificates: what every provider image runs on
#   build    runtime plus gcc, g++, make and the Python headers: the builder stage of images
#            that compile wheels (llama-cpp-python)
set -euo pipefail

variant=${1:?usage: build-rootfs.sh runtime|build TAG}
tag=${2:?usage: build-rootfs.sh runtime|build TAG}

packages=python3,python3-venv,ca-certificates
case "$variant" in
  runtime) ;;
  build) packages="$packages,gcc,g++,make,python3-dev,libc6-dev,libgomp1" ;;
  *) echo "build-rootfs: unknown variant '$variant' (runtime or build)" >&2; exit 2 ;;
esac

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "build-rootfs: installing debootstrap" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The mirror is MF_DEBIAN_MIRROR when set (a non-Debian host, such as a CI runner), else whatever apt on
# this machine already uses; no host is written into the repo.
mirror=${MF_DEBIAN_MIRROR:-$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true
  } | awk '{print $2}' | grep -v -- '-security' | head -n 1
)}
if [ -z "$mirror" ]; then
  echo "build-rootfs: no Debian mirror found in apt's sources; configure apt first" >&2
  exit 1
fi

cache=${MF_DEBOOTSTRAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelforge/debootstrap}
mkdir -p "$cache"
root=$(mktemp -d /tmp/mf-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "build-rootfs: debootstrap $variant from $mirror" >&2
debootstrap --variant=minbase --cache-dir="$cache" --include="$packages" bookworm "$root" "$mirror" >&2

chroot "$root" /usr/sbin/groupadd --gid 1000 mf
chroot "$root" /usr/sbin/useradd --uid 1000 --gid 1000 --create-home --home-dir /home/mf --shell /bin/sh mf
chmod 0755 "$root/home/mf"

# Trim: documentation, man pages, locales, apt's lists and caches, logs.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/usr/share/common-licenses \
       "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
       "$root"/var/log/* "$root"/var/lib/dpkg/*-old
find "$root"/usr/lib/python3* -name '__pycache__' -type d -prune -exec rm -rf {} +
if [ "$variant" = runtime ]; then
  # The runtime never compiles: Python's test suite and idle/tkinter leftovers are not needed.
  rm -rf "$root"/usr/lib/python3.11/test "$root"/usr/lib/python3.11/idlelib
fi

# Fit to publish (CIS Docker Benchmark 4.8): no setuid or setgid programs, and no package manager.
# apt and the dpkg program go; dpkg's database (/var/lib/dpkg/status) stays, less the removed
# packages, so SBOM tools and vulnerability scanners can still list the Debian packages inside.
# The runtime variant also drops the wheels behind ensurepip (pip, setuptools): nothing installs
# packages at run time. Builder stages make their venvs on the build variant, which keeps them.
find "$root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
removed='apt|dpkg|libapt-pkg[^\n]*'
rm -rf "$root"/usr/bin/apt* "$root"/usr/lib/apt "$root"/etc/apt "$root"/var/lib/apt "$root"/var/cache/apt \
       "$root"/usr/lib/x86_64-linux-gnu/libapt-* "$root"/usr/bin/dpkg* "$root"/usr/sbin/dpkg* \
       "$root"/usr/share/dpkg "$root"/etc/dpkg "$root"/var/lib/dpkg/info/apt.* "$root"/var/lib/dpkg/info/dpkg.* \
       "$root"/var/lib/dpkg/info/libapt-pkg*
if [ "$variant" = runtime ]; then
  rm -rf "$root"/usr/share/python-wheels "$root"/usr/lib/python3.11/ensurepip \
         "$root"/var/lib/dpkg/info/python3-pip-whl.* "$root"/var/lib/dpkg/info/python3-setuptools-whl.*
  removed="$removed|python3-pip-whl|python3-setuptools-whl"
fi
awk -v RS= -v ORS='\n\n' "!/^Package: ($removed)\n/" "$root/var/lib/dpkg/status" >"$root/var/lib/dpkg/status.new"
mv "$root/var/lib/dpkg/status.new" "$root/var/lib/dpkg/status"

tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/home/mf' \
  --change 'USER mf' \
  --change 'WORKDIR /home/mf' \
  --change 'CMD ["/usr/bin/python3"]' \
  --change "LABEL org.modelforge.image=base org.modelforge.flavour=$variant" \
  - "$tag" >&2
echo "$tag"
