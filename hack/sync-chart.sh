#!/usr/bin/env bash
# Copies the generated CRDs into the Helm chart, so config/ (kustomize) and
# charts/ install the same API. Called by `make manifests`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
crds=$root/charts/hubcredits/crds
[ -d "$root/charts/hubcredits" ] || exit 0
mkdir -p "$crds"
cp "$root"/config/crd/bases/*.yaml "$crds/"
