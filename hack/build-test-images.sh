#!/usr/bin/env bash
# The test images of make cluster, for this machine's platform only, with
# hack/tools/image ($1, default bin/oci-image):
#   bin/image/test/pause.oci.tar       localhost/hubcredits/pause:test (the pod sandbox)
#   bin/image/test/singleuser.oci.tar  localhost/hubcredits/singleuser-stub:test
#   bin/image/test/coredns.oci.tar     localhost/hubcredits/coredns:test
# (test/images/*: a pause that reaps zombies, and a stub that answers like a
# Jupyter server; hack/tools/coredns: CoreDNS with only the plugins the
# cluster's DNS needs, test/cluster/coredns.yaml). They are test
# infrastructure, never published. CoreDNS (a 3-minute build) is rebuilt only
# when its archive is older than hack/tools/coredns or the image tool.
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
if [ ! -s "$out/coredns.oci.tar" ] || [ -n "$(find hack/tools/coredns "$tool" -newer "$out/coredns.oci.tar" -print -quit)" ]; then
  start=$SECONDS
  mkdir -p "$out/coredns"
  (cd hack/tools/coredns && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/coredns/bin" .)
  "$tool" -platform "$plat=$out/coredns/bin" -entrypoint /coredns -title hubcredits-coredns \
    -description "CoreDNS for make cluster: kubernetes plugin, no forward (test only)" \
    -version test -name localhost/hubcredits/coredns -layout "$out/coredns/layout" -archive "$out/coredns.oci.tar" >/dev/null
  echo ">>> coredns image built in $((SECONDS - start))s"
fi
echo ">>> test images in $out: pause.oci.tar singleuser-stub.oci.tar coredns.oci.tar"
