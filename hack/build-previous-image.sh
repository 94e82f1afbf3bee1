#!/usr/bin/env bash
# hack/build-previous-image.sh SHA: an earlier commit's operator image and
# tree, for the upgrade test of test/z2jh/run.sh (which admins upgrade from):
#   bin/image/previous/<sha>/src/                 that commit's tree (git archive): its chart and samples
#   bin/image/previous/<sha>/hubcredits.oci.tar   ghcr.io/hubcredits/hubcredits:previous-<sha, 12 digits>
# The image is built by that commit's own hack/build-image.sh, for this
# machine's platform only, with this checkout's assembler ($2, default
# bin/oci-image) tagging it previous-<sha> (so that it never overwrites the
# image of this checkout, tagged with the same appVersion) and stamping the
# commit. Cached by sha: a second run costs nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ $# -ge 1 ] || { echo "usage: hack/build-previous-image.sh SHA [OCI-IMAGE-TOOL]" >&2; exit 2; }
sha=$(git rev-parse --verify --quiet "$1^{commit}") || { echo "build-previous-image.sh: no commit $1 in this clone" >&2; exit 1; }
tool=$(realpath "${2:-$root/bin/oci-image}")
[ -x "$tool" ] || { echo "no $tool: make bin/oci-image" >&2; exit 1; }
dir=$root/bin/image/previous/$sha
[ -s "$dir/hubcredits.oci.tar" ] && [ -d "$dir/src/charts/hubcredits" ] && exit 0

start=$SECONDS
tmp=$dir.tmp
rm -rf "$tmp"
mkdir -p "$tmp/src"
git archive "$sha" | tar -x -C "$tmp/src"
# That commit's build-image.sh passes only flags to the assembler: a flag
# given again later wins, so the tag and the revision are appended.
cat >"$tmp/oci-image" <<EOF
#!/bin/sh
exec "$tool" "\$@" -tag previous-${sha:0:12} -revision $sha
EOF
chmod +x "$tmp/oci-image"
# The tree has no .git: git must not find this checkout's around it (its
# HEAD is not that commit), and the Go build stamps no VCS information.
(cd "$tmp/src" && GIT_CEILING_DIRECTORIES=$tmp GOFLAGS=-buildvcs=false \
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct "$sha") IMAGE_PLATFORMS="linux/$(go env GOARCH)" \
  hack/build-image.sh "$tmp/oci-image") >"$tmp/build.log" 2>&1 \
  || { tail -20 "$tmp/build.log" >&2; echo "building the operator image of $sha failed (log: $tmp/build.log)" >&2; exit 1; }
mv "$tmp"/src/bin/image/hubcredits-*.oci.tar "$tmp/hubcredits.oci.tar"
rm -rf "$tmp/src/bin"
rm -rf "$dir"
mv "$tmp" "$dir"
echo ">>> the operator image of $(git log -1 --format='%h (%s)' "$sha" | cut -c1-100): built in $((SECONDS - start))s"
