#!/usr/bin/env bash
# make test-z2jh: hubcredits next to the real Zero to JupyterHub 4.4.0 chart,
# on a real node (internal/cluster), as an admin installs them.
#
# 1. Builds the Z2JH hub and proxy images (hack/images/, cached) and starts
#    a real single-node cluster (bin/hubcredits-cluster up --detach)
#    in TEST_Z2JH_DIR (default .cluster-z2jh) with the operator image, the
#    pause and stub images, CoreDNS and the Z2JH hub and proxy images built
#    here (hack/images/); runs the cluster's DNS (test/cluster/coredns.yaml).
#    Tears it all down on exit, whatever happens.
# 2. helm install of the Z2JH chart (../shared/third_party/z2jh-chart-4.4.0)
#    with test/z2jh/z2jh-values.yaml: only what an admin sets (images, the
#    DummyAuthenticator, no PVCs, the pullers, user scheduler and culler off;
#    each key says why).
# 3. hubcredits as docs/install.md says, running its blocks (marked
#    <!-- test-cluster: NAME -->, test/cluster/docblock.py): step 1's values
#    with only the image reference and pull policy changed (hubAPI.url keeps
#    its default: the cluster has DNS), the install, the accounts, the checks
#    and the dry run.
# 4. Step 4: the Z2JH values block of the guide, checked equal to what the
#    chart's NOTES printed for this release, merged into the admin's values
#    file (profileList appended), and the guide's own `helm upgrade` of the
#    Z2JH release (the chart reference replaced by the local chart: no chart
#    repository here) and its checks; then steps 5 and 6.
# 5. story.py through the proxy-public Service, as a browser.
#
# With CLUSTER_STATE set (test/cluster/run.sh, make test), it runs on that
# running cluster instead (its images and DNS loaded, namespace jhub gone)
# and leaves its teardown to the caller: one cluster bring-up for both.
#
# Needs root. In CI (CI=true) nothing may be skipped; elsewhere a missing
# ../shared or a non-root user skips with one line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
py=/usr/bin/python3

skip() {
  if [ "${CI:-}" = true ]; then echo "test-z2jh: $1 (in CI this is a failure)" >&2; exit 1; fi
  echo "test-z2jh: skipped: $1"; exit 0
}
[ "$(id -u)" = 0 ] || skip "a real node needs root"
third_party=${HUBCREDITS_THIRD_PARTY:-}
if [ -z "$third_party" ]; then
  for dir in "$root/../shared/third_party" "$root/../../shared/third_party"; do
    [ -d "$dir/z2jh-chart-4.4.0/jupyterhub" ] && { third_party=$(cd "$dir" && pwd); break; }
  done
fi
[ -n "$third_party" ] || skip "no ../shared/third_party beside the checkout (the Z2JH 4.4.0 chart and the hub's wheels)"
z2jh_chart=$third_party/z2jh-chart-4.4.0/jupyterhub

own_cluster=true
[ -n "${CLUSTER_STATE:-}" ] && own_cluster=false
# The Z2JH hub and proxy images (hack/images/; cached, 2 s when built).
$own_cluster && hack/images/build-z2jh-images.sh "$root/bin/oci-rootfs"

state=$(realpath -m "${CLUSTER_STATE:-${TEST_Z2JH_DIR:-$root/.cluster-z2jh}}")
work=$(mktemp -d -t hubcredits-test-z2jh-XXXXXX)
version=$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}.*/\1/p' charts/hubcredits/Chart.yaml)
export PATH=$root/bin:$root/bin/k8s:$PATH
export KUBECONFIG=$state/kubeconfig
start=$SECONDS
t() { echo ">>> [$((SECONDS - start))s] $*"; }

cleanup() {
  rc=$?
  set +e
  if [ $rc -ne 0 ] && [ -s "$KUBECONFIG" ]; then
    echo ">>> test-z2jh failed: pods, the hub's and the operator's logs"
    kubectl get pods -A -o wide 2>&1
    kubectl -n jhub logs deploy/hub --tail=60 2>&1 | cut -c1-400
    for p in $(kubectl -n jhub get pods -l app.kubernetes.io/name=hubcredits -o name 2>/dev/null); do
      echo "--- $p"; kubectl -n jhub logs "$p" --tail=30 2>&1 | cut -c1-400
    done
  fi
  if ! $own_cluster; then
    rm -rf "$work"
  elif [ -n "${TEST_Z2JH_KEEP:-}" ]; then
    echo ">>> TEST_Z2JH_KEEP: the cluster stays up (KUBECONFIG=$KUBECONFIG; $work); stop it with: bin/hubcredits-cluster down --state-dir $state"
  else
    echo ">>> tearing the cluster down"
    bin/hubcredits-cluster down --state-dir "$state" || rc=1
    rm -rf "$work"
  fi
  echo ">>> test-z2jh: $([ $rc -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - start))s"
  exit $rc
}

if $own_cluster; then
  bin/hubcredits-cluster down --state-dir "$state" >/dev/null
  trap cleanup EXIT
  imgs=(bin/image/test/pause.oci.tar bin/image/test/singleuser-stub.oci.tar "bin/image/hubcredits-$version.oci.tar"
    bin/image/test/coredns.oci.tar bin/image/test/z2jh-hub.oci.tar bin/image/test/z2jh-proxy.oci.tar)
  bin/hubcredits-cluster up --detach --state-dir "$state" "${imgs[@]/#/--image=}"
  t "the cluster's DNS (CoreDNS, test/cluster/coredns.yaml)"
  kubectl apply -f test/cluster/coredns.yaml >/dev/null
  kubectl -n kube-system rollout status deployment/coredns --timeout=120s
else
  trap cleanup EXIT
  t "on the running cluster in $state"
fi

doc() { "$py" "$root/test/cluster/docblock.py" docs/install.md "$1"; }
ln -s "$root/charts" "$root/config" "$work/"
values=$work/hubcredits-values.yaml
run_doc() { # name [sed expression]: runs the guide's block as a shell script, in $work
  echo ">>> docs/install.md: $1"
  doc "$1" | sed -e "${2:-}" > "$work/$1.sh"
  (cd "$work" && bash -euo pipefail "$work/$1.sh") 2>&1 | tee "$work/$1.out"
}

t "Zero to JupyterHub 4.4.0 (helm install, test/z2jh/z2jh-values.yaml)"
kubectl create namespace jhub >/dev/null
cp "$here/z2jh-values.yaml" "$work/z2jh-values.yaml"
helm install jhub "$z2jh_chart" -n jhub -f "$work/z2jh-values.yaml" --wait --timeout 5m >/dev/null
kubectl -n jhub get pods -o wide

t "hubcredits, docs/install.md steps 1-3"
doc values | sed -e "s|repository: registry.example.org/hubcredits.*|repository: ghcr.io/hubcredits/hubcredits\n  pullPolicy: Never|" \
  > "$values"
grep -q 'pullPolicy: Never' "$values"
run_doc install
run_doc check
grep -q '^LS0t' "$work/check.out" || { echo "the CA was not injected into the webhook configuration"; exit 1; }
run_doc accounts
run_doc dry-run
grep -q 'hubcredits.io/billing-value' "$work/dry-run.out" || { echo "the dry-run spawn was not priced"; exit 1; }

t "step 4: the Z2JH values (the guide's block = the NOTES' block), the guide's helm upgrade of jhub"
helm get notes hubcredits -n jhub > "$work/notes.txt"
doc z2jh-values > "$work/z2jh-values-doc.yaml"
"$py" "$here/values.py" check "$work/notes.txt" "$work/z2jh-values-doc.yaml"
"$py" "$here/values.py" merge "$work/z2jh-values.yaml" "$work/z2jh-values-doc.yaml"
run_doc z2jh-upgrade "s|jupyterhub/jupyterhub --version 4.4.0|$z2jh_chart|"
kubectl -n jhub rollout status deployment/hub --timeout=180s
kubectl -n jhub rollout status deployment/proxy --timeout=60s
run_doc z2jh-check
grep -q 'Using Spawner: hubcredits_hub' "$work/z2jh-check.out" || { echo "the hub does not run the glue"; exit 1; }

t "steps 5 and 6"
sed -i -e 's/failurePolicy: Ignore.*/failurePolicy: Fail/' "$values"
run_doc upgrade
run_doc before-shadow-off
sed -i -e 's/shadow: true.*/shadow: false/' "$values"
run_doc upgrade
kubectl -n jhub rollout status deployment/hubcredits --timeout=120s

t "the story through Z2JH's proxy (story.py)"
HUB_NAMESPACE=jhub "$py" "$here/story.py"
t "done"
