#!/usr/bin/env bash
# Renders docs/api.md, the API reference, from the Go types in api/v1alpha1
# with crd-ref-docs (markdown renderer, templates in hack/crd-ref-docs/).
# crd-ref-docs is built from the Go module proxy into bin/, at the version
# pinned by the tools module hack/tools/docs/go.mod; the build is skipped
# when bin/crd-ref-docs is present and newer than that go.mod.
# Called by `make manifests`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
bin=$root/bin/crd-ref-docs
if [ ! -x "$bin" ] || [ "$root/hack/tools/docs/go.mod" -nt "$bin" ]; then
  mkdir -p "$root/bin"
  (cd "$root/hack/tools/docs" && "$GO" build -o "$bin" github.com/elastic/crd-ref-docs)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root"
"$bin" \
  --config hack/crd-ref-docs/config.yaml \
  --templates-dir hack/crd-ref-docs/templates \
  --renderer markdown \
  --source-path ./api/v1alpha1 \
  --output-path "$tmp/api.md" \
  --log-level ERROR
# The templates leave runs of blank lines; squeeze them.
cat -s "$tmp/api.md" >"$root/docs/api.md"
