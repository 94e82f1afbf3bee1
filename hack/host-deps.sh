#!/usr/bin/env bash
# The Debian packages this machine needs for make test (and make cluster):
# installs the missing ones when run as root, else stops with the one
# apt-get line to run. Called first by make test, so that a newcomer's first
# run does not fail at the hub step after twenty minutes of building.
#
#   hack/host-deps.sh [test|cluster]   (default: test)
set -euo pipefail
# the hub-side glue on a real JupyterHub (test/hub): Debian's JupyterHub 3.0,
# its proxy, the Kubernetes client, flake8, and chromium for screenshots
hub=(jupyterhub node-configurable-http-proxy python3-kubernetes python3-websocket python3-requests python3-flake8 chromium)
# the real node (make cluster, make test-cluster)
node=(containerd runc containernetworking-plugins conntrack iptables ipset nftables iproute2)
# the Z2JH hub and proxy images (hack/images/: debootstrap of Debian 12)
z2jh=(debootstrap)
# make image: the CA bundle the image carries
image=(ca-certificates)
case "${1:-test}" in
  test) want=("${hub[@]}" "${node[@]}" "${z2jh[@]}" "${image[@]}") ;;
  cluster) want=("${node[@]}" "${image[@]}") ;;
  *) echo "usage: hack/host-deps.sh [test|cluster]" >&2; exit 2 ;;
esac
missing=()
for p in "${want[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "make ${1:-test} needs Debian packages; run:  sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo ">>> Installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
