#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kubectl, etcd) from the Go
# module proxy into bin/k8s. No release binaries are downloaded: everything is
# compiled from source pinned in hack/tools/{k8s,etcd}/go.mod.
# A cold build takes 11-14 minutes on a 2-core machine; it is skipped when the
# binaries are already there.
#
#   hack/build-k8s-tools.sh node   also the node: kubelet, kube-scheduler,
#                                  kube-controller-manager, kube-proxy
#                                  (make cluster; about 5 more minutes cold)
#                                  and kube-router, whose network policy
#                                  controller enforces NetworkPolicies
#                                  (hack/tools/kube-router/go.mod; about 8 min cold)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${K8S_ASSETS_DIR:-$root/bin/k8s}
mkdir -p "$dest"
export CGO_ENABLED=0

KV=$(awk '$1=="k8s.io/kubernetes"{print $2}' "$root/hack/tools/k8s/go.mod" | head -n1)
minor=${KV#v1.}; minor=${minor%%.*}

want=(kube-apiserver kubectl etcd)
node=(kubelet kube-scheduler kube-controller-manager kube-proxy)
[ "${1:-}" = node ] && want+=("${node[@]}" kube-router)
need=()
for b in "${want[@]}"; do
  [ -x "$dest/$b" ] || need+=("$b")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "hack/build-k8s-tools.sh: already built in $dest (${want[*]})"
  exit 0
fi

start=$(date +%s)
progress() {
  # Print a heartbeat so a long cold build is not mistaken for a hang.
  while sleep 60; do echo "  ... still building ($(( $(date +%s) - start ))s elapsed)"; done
}
progress & hb=$!
trap 'kill $hb 2>/dev/null || true' EXIT

if [[ " ${need[*]} " == *" kube-apiserver "* || " ${need[*]} " == *" kubectl "* ]]; then
  echo ">>> Building kube-apiserver and kubectl $KV from source (Go module proxy)."
  echo ">>> A cold build takes 11-14 minutes on 2 cores; later runs reuse bin/k8s."
  LDF="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF="$LDF -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  done
  (cd "$root/hack/tools/k8s" && go build -trimpath -ldflags "$LDF" -o "$dest/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
fi
nodeneed=()
for b in "${node[@]}"; do
  [[ " ${need[*]} " == *" $b "* ]] && nodeneed+=("k8s.io/kubernetes/cmd/$b")
done
if [ ${#nodeneed[@]} -gt 0 ]; then
  echo ">>> Building the node ($KV: ${nodeneed[*]##*/}) from source; about 5 minutes cold on 2 cores."
  LDF="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF="$LDF -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  done
  (cd "$root/hack/tools/k8s" && go build -trimpath -ldflags "$LDF" -o "$dest/" "${nodeneed[@]}")
fi
if [[ " ${need[*]} " == *" kube-router "* ]]; then
  echo ">>> Building kube-router (its network policy controller enforces NetworkPolicies) from source."
  KRV=$(awk '{for (i = 1; i < NF; i++) if ($i == "github.com/cloudnativelabs/kube-router/v2") { print $(i+1); exit }}' "$root/hack/tools/kube-router/go.mod")
  (cd "$root/hack/tools/kube-router" && go build -trimpath \
      -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KRV" \
      -o "$dest/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
fi
if [[ " ${need[*]} " == *" etcd "* ]]; then
  echo ">>> Building etcd from source (about 1 minute)."
  (cd "$root/hack/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$dest/etcd" go.etcd.io/etcd/server/v3)
fi
echo ">>> ${want[*]} ready in $dest after $(( $(date +%s) - start ))s."
