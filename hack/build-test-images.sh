#!/usr/bin/env bash
# The test images of make cluster, for this machine's platform only, with
# hack/tools/image ($1, default bin/oci-image):
#   bin/image/test/pause.oci.tar       localhost/hubcredits/pause:test (the pod sandbox)
#   bin/image/test/singleuser.oci.tar  localhost/hubcredits/singleuser-stub:test
# (test/images/*: a pause that reaps zombies, and a stub that answers like a
# Jupyter server). They are test infrastructure, never published.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tool=${1:-$root/bin/oci-image}
out=$root/bin/image/test
cd "$root"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
plat=linux/$(go env GOARCH)
mkdir -p "$out"
build() { # name entrypoint package description
  local name=$1 entry=$2 pkg=$3 desc=$4 dir=$out/$1
  mkdir -p "$dir"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/bin" "$pkg"
  "$tool" -platform "$plat=$dir/bin" -entrypoint "$entry" -title "hubcredits-$name" -description "$desc" \
    -version test -name "localhost/hubcredits/$name" -layout "$dir/layout" -archive "$out/$name.oci.tar" >/dev/null
}
build pause /pause ./test/images/pause "make cluster's pod sandbox (test only)"
build singleuser-stub /usr/local/bin/jupyterhub-singleuser ./test/images/singleuser "A stub that answers like jupyterhub-singleuser (test only)"
echo ">>> test images in $out: pause.oci.tar singleuser-stub.oci.tar"
