#!/usr/bin/env bash
# make image: the operator's OCI image, offline and reproducibly, without
# Docker. Cross-compiles the static manager for each platform
# (IMAGE_PLATFORMS, default linux/amd64 linux/arm64) and assembles them with
# hack/tools/image ($1, default bin/oci-image) into
#   bin/image/layout/                      an OCI image layout (the index of all platforms)
#   bin/image/hubcredits-<appVersion>.oci.tar  the same as an OCI archive
#   bin/image/digest                       the index digest
# tagged with the chart's appVersion. Every time in the image is
# SOURCE_DATE_EPOCH (default: the last commit's time), so building the same
# commit twice gives the same digest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tool=${1:-$root/bin/oci-image}
out=$root/bin/image
cd "$root"

ca=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$ca" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo ">>> Installing Debian's ca-certificates for the image's CA bundle"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates >/dev/null
  else
    echo "make image needs $ca: run  sudo apt-get install ca-certificates" >&2; exit 1
  fi
fi

version=$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}.*/\1/p' charts/hubcredits/Chart.yaml)
[ -n "$version" ] || { echo "no appVersion in charts/hubcredits/Chart.yaml" >&2; exit 1; }
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
platforms=${IMAGE_PLATFORMS:-linux/amd64 linux/arm64}

mkdir -p "$out"
cp "$ca" "$out/ca-certificates.crt"
args=()
for p in $platforms; do
  os=${p%/*} arch=${p#*/}
  dir=$out/$os-$arch
  mkdir -p "$dir"
  start=$SECONDS
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$dir/manager" .
  echo ">>> manager for $p built in $((SECONDS - start))s"
  args+=(-platform "$p=$dir/manager")
done
"$tool" "${args[@]}" -ca "$out/ca-certificates.crt" -version "$version" -revision "$revision" \
  -layout "$out/layout" -archive "$out/hubcredits-$version.oci.tar" -digest-file "$out/digest"
