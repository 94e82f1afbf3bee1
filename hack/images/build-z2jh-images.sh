#!/usr/bin/env bash
# The Zero to JupyterHub hub and proxy images of make test-z2jh, built here,
# offline from any container registry (see hack/images/README.md):
#   bin/image/test/z2jh-hub.oci.tar    localhost/hubcredits/z2jh-hub:test
#   bin/image/test/z2jh-proxy.oci.tar  localhost/hubcredits/z2jh-proxy:test
# Each is a Debian 12 (bookworm) root filesystem made by debootstrap from
# Debian's archive (the mirror this machine's apt uses), turned into a
# one-layer OCI image by hack/tools/image/rootfs ($1, default bin/oci-rootfs).
# The hub gets Debian's python3 and python3-* packages plus JupyterHub 5.5.1,
# KubeSpawner 7.0.0 (Z2JH 4.4.0's pin) and the other wheels of
# ../shared/third_party/wheels (beside the checkout, or a worktree's parent, or
# HUBCREDITS_THIRD_PARTY), installed with
# pip --no-index --no-deps; the proxy gets Debian's node-configurable-http-proxy.
# Test infrastructure, never published. Needs root (debootstrap, chroot).
# Cached: an image is rebuilt only when its archive is older than this
# script, the rootfs tool or the wheels; debootstrap's .debs are kept in
# bin/image/z2jh/debs.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tool=${1:-$root/bin/oci-rootfs}
third=${HUBCREDITS_THIRD_PARTY:-}
if [ -z "$third" ]; then
  for dir in "$root/../shared/third_party" "$root/../../shared/third_party"; do
    [ -d "$dir/wheels" ] && { third=$(cd "$dir" && pwd); break; }
  done
fi
out=$root/bin/image/test
work=$root/bin/image/z2jh
cd "$root"

[ "$(id -u)" = 0 ] || { echo "build-z2jh-images.sh needs root (debootstrap and chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  echo ">>> Installing Debian's debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
[ -n "$third" ] && [ -d "$third/wheels" ] || { echo "no ../shared/third_party/wheels beside the checkout (the JupyterHub and KubeSpawner wheels; or set HUBCREDITS_THIRD_PARTY)" >&2; exit 1; }
[ -x "$tool" ] || { echo "no $tool: build it with  cd hack/tools/image && go build -o $tool ./rootfs" >&2; exit 1; }

# The Debian mirror apt uses here (deb822 or one-line sources), else Debian's own.
mirror=$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\)[[:space:]]*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb[[:space:]]\+\(http[^[:space:]]*\/debian\)[[:space:]]\+bookworm[[:space:]].*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct -- hack/images 2>/dev/null || echo 0)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
plat=linux/$(dpkg --print-architecture)
mkdir -p "$out" "$work/debs"

# What JupyterHub 5.5, KubeSpawner 7, Z2JH's jupyterhub_config.py and z2jh.py
# import, from Debian (the rest are the wheels); pip installs the wheels.
hub_pkgs=(python3 python3-pip python3-alembic python3-certipy python3-jinja2 python3-oauthlib
  python3-packaging python3-pamela python3-prometheus-client python3-dateutil python3-requests
  python3-sqlalchemy python3-tornado python3-traitlets python3-idna python3-jsonschema
  python3-pythonjsonlogger python3-yaml python3-escapism python3-slugify python3-urllib3
  python3-certifi python3-six python3-aiohttp python3-pycurl ca-certificates tini
  python3-cffi-backend) # debootstrap does not resolve virtual packages: python3-cryptography needs it
proxy_pkgs=(node-configurable-http-proxy ca-certificates
  node-fast-safe-stringify) # (provides node-safe-stable-stringify, which debootstrap cannot resolve)
wheels=(typing_extensions annotated_types typing_inspection pydantic_core pydantic jupyter_events
  jupyterhub-5.5.1 kubernetes_asyncio jupyterhub_kubespawner-7.0.0)

# stale ARCHIVE: whether the archive is missing or older than its inputs.
stale() {
  [ -s "$1" ] || return 0
  [ -n "$(find hack/images/*.sh "$tool" "$third/wheels" -newer "$1" -print -quit)" ]
}

# rootfs NAME PKG...: a fresh copy at $work/NAME of the debootstrap tree with
# these packages, which is kept ($work/NAME.debootstrap) while they are the same.
rootfs() {
  local name=$1 dir=$work/$1 base=$work/$1.debootstrap; shift
  local inc; inc=$(IFS=,; echo "$*")
  if [ "$(cat "$base.pkgs" 2>/dev/null)" != "$mirror $inc" ]; then
    rm -rf "$base" "$base.pkgs"
    debootstrap --variant=minbase --cache-dir="$work/debs" --include="$inc" bookworm "$base" "$mirror" \
      >"$work/$name.debootstrap.log" 2>&1 || { tail -20 "$work/$name.debootstrap.log" >&2; echo "debootstrap of $name failed (log: $work/$name.debootstrap.log)" >&2; exit 1; }
    echo "$mirror $inc" >"$base.pkgs"
  fi
  rm -rf "$dir"
  cp -a "$base" "$dir"
}

# slim DIR: drop what a container does not use and what differs per build.
slim() {
  local d=$1
  rm -rf "$d"/var/cache/apt/* "$d"/var/lib/apt/lists/* "$d"/var/log/* "$d"/usr/share/doc/* \
    "$d"/usr/share/man/* "$d"/usr/share/info/* "$d"/usr/share/locale/* "$d"/var/cache/debconf/*-old \
    "$d"/var/lib/dpkg/*-old "$d"/tmp/* "$d"/root/.cache
  find "$d/dev" -mindepth 1 -delete
  : >"$d/etc/machine-id"; : >"$d/etc/resolv.conf"; echo localhost >"$d/etc/hostname"
}

image() { # NAME DIR ARGS...: the tree as bin/image/test/z2jh-NAME.oci.tar
  local name=$1 dir=$2; shift 2
  "$tool" -root "$dir" -platform "$plat" -name "localhost/hubcredits/z2jh-$name" -tag test \
    -layout "$work/$name.layout" -archive "$out/z2jh-$name.oci.tar" -work "$work" \
    -label "org.opencontainers.image.title=hubcredits-z2jh-$name" \
    -label "org.opencontainers.image.description=Zero to JupyterHub 4.4 $name image built from Debian 12 for make test-z2jh (test only)" \
    "$@"
}

if stale "$out/z2jh-hub.oci.tar"; then
  start=$SECONDS
  rootfs hub "${hub_pkgs[@]}"
  d=$work/hub
  echo ">>> hub: debootstrap in $((SECONDS - start))s"
  mkdir -p "$d/tmp/wheels"
  for w in "${wheels[@]}"; do cp "$third"/wheels/"$w"-*.whl "$d/tmp/wheels/"; done
  whls=(); for f in "$d"/tmp/wheels/*.whl; do whls+=("/tmp/wheels/${f##*/}"); done
  chroot "$d" /usr/bin/python3 -m pip install -q --no-index --no-deps --no-cache-dir --break-system-packages "${whls[@]}"
  # Z2JH's hub image: user jovyan (1000), the chart's config directory,
  # a writable /srv/jupyterhub, tini as PID 1.
  chroot "$d" /usr/sbin/groupadd -g 1000 jovyan
  chroot "$d" /usr/sbin/useradd -u 1000 -g 1000 -m -d /home/jovyan -s /bin/bash -c "Default user" jovyan
  mkdir -p "$d/usr/local/etc/jupyterhub/jupyterhub_config.d" "$d/srv/jupyterhub"
  chown 1000:1000 "$d/srv/jupyterhub"
  slim "$d"
  image hub "$d" -user 1000:1000 -workdir /srv/jupyterhub -entrypoint tini -entrypoint -- \
    -cmd jupyterhub -cmd --config -cmd /usr/local/etc/jupyterhub/jupyterhub_config.py \
    -env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -env LANG=C.UTF-8 \
    -env HOME=/home/jovyan -env NB_USER=jovyan -env NB_UID=1000
  echo ">>> hub image in $((SECONDS - start))s"
fi

if stale "$out/z2jh-proxy.oci.tar"; then
  start=$SECONDS
  rootfs proxy "${proxy_pkgs[@]}"
  echo ">>> proxy: debootstrap in $((SECONDS - start))s"
  slim "$work/proxy"
  # The chart runs `configurable-http-proxy ...` as 65534 (nobody).
  image proxy "$work/proxy" -user 65534:65534 -workdir / -cmd configurable-http-proxy \
    -env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -env NODE_PATH=/usr/share/nodejs
  echo ">>> proxy image in $((SECONDS - start))s"
fi

# Each image runs its command as its user, in its own tree (chroot, new mount
# and PID namespaces): the hub imports what the chart's jupyterhub_config.py
# and z2jh.py import, and can write /srv/jupyterhub.
chart=$third/z2jh-chart-4.4.0/jupyterhub/files/hub
in_tree() { # DIR USER CMD...
  local dir=$1 user=$2; shift 2
  unshare --mount --pid --fork --mount-proc="$dir/proc" chroot --userspec="$user" "$dir" \
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 "$@"
}
mkdir -p "$work/hub/tmp/z2jh" && cp "$chart/z2jh.py" "$work/hub/tmp/z2jh/"
hubv=$(in_tree "$work/hub" 1000:1000 sh -c 'cd /srv/jupyterhub && touch .w && rm .w && jupyterhub --version')
in_tree "$work/hub" 1000:1000 python3 -c '
import sys; sys.path.insert(0, "/tmp/z2jh")
import glob, os, re, z2jh, jupyterhub.utils, kubernetes_asyncio.client, kubespawner, pydantic
from tornado.httpclient import AsyncHTTPClient
AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient")
from jupyterhub._data import DATA_FILES_PATH
assert kubespawner.__version__ == "7.0.0", kubespawner.__version__
assert os.path.isdir(DATA_FILES_PATH + "/static"), DATA_FILES_PATH
' || { echo "the hub image cannot import what Z2JH's config needs" >&2; exit 1; }
rm -rf "$work/hub/tmp/z2jh"
chpv=$(in_tree "$work/proxy" 65534:65534 configurable-http-proxy --version)
echo ">>> hub: JupyterHub $hubv, KubeSpawner 7.0.0 (imports of jupyterhub_config.py and z2jh.py ok); proxy: configurable-http-proxy $chpv"
ls -l "$out"/z2jh-*.oci.tar
