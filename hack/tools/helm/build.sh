#!/usr/bin/env bash
# Builds helm from the Go module proxy (version pinned in this module's
# go.mod) into $1 (default: bin/helm of the repository), with the version
# ldflags helm's own Makefile sets: without them `helm template` assumes
# Kubernetes v1.20 and refuses the chart's kubeVersion. About 2-3 minutes
# cold on 2 cores; later builds reuse the Go build cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
dest=${1:-$root/bin/helm}
cd "$here"
hv=$(go list -f '{{.Version}}' -m helm.sh/helm/v3)
kv=$(go list -f '{{.Version}}' -m k8s.io/client-go)   # v0.N.x -> Kubernetes 1.N
kminor=$(echo "$kv" | cut -d. -f2)
ldf="-s -w -X helm.sh/helm/v3/internal/version.version=$hv -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldf="$ldf -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kminor"
done
mkdir -p "$(dirname "$dest")"
echo ">>> Building helm $hv (assumes Kubernetes 1.$kminor offline) into $dest"
CGO_ENABLED=${CGO_ENABLED:-0} go build -trimpath -ldflags "$ldf" -o "$dest" helm.sh/helm/v3/cmd/helm
