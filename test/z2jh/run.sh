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
#    <!-- test-cluster: NAME -->, test/cluster/docblock.py), first as it was:
#    the chart, samples and operator image of the commit before the last
#    change of charts/hubcredits or api/ (hack/build-previous-image.sh, cached
#    by sha; the git history must be there), installed with step 1's values
#    with only the image reference and pull policy changed (hubAPI.url keeps
#    its default: the cluster has DNS), the checks, the accounts. Then the
#    guide's Upgrade section to this checkout (the CRDs, the release with the
#    new image tag): the new image runs, the CRDs are this chart's, every
#    account's balance and totals are exactly as before; the checks and the
#    dry run.
# 4. Step 4: the Z2JH values block of the guide, checked equal to what the
#    chart's NOTES printed for this release, merged into the admin's values
#    file (profileList appended), and the guide's own `helm upgrade` of the
#    Z2JH release (the chart reference replaced by the local chart: no chart
#    repository here) and its checks; then steps 5 and 6.
# 5. story.py through the proxy-public Service, as a browser.
# 6. The guide's Uninstall: the Z2JH values back to this file (its block),
#    the webhooks, the release, the data; nothing of hubcredits is left, the
#    hub restarts and answers through the proxy, and a user's server starts
#    unpriced (story.py --after-uninstall).
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
test_name=test-z2jh
. "$root/test/lib.sh"

[ "$(id -u)" = 0 ] || skip "a real node needs root"
third_party=$(find_third_party z2jh-chart-4.4.0/jupyterhub)
[ -n "$third_party" ] || skip "no ../shared/third_party beside the checkout (the Z2JH 4.4.0 chart and the hub's wheels)"
z2jh_chart=$third_party/z2jh-chart-4.4.0/jupyterhub

own_cluster=true
[ -n "${CLUSTER_STATE:-}" ] && own_cluster=false
# The Z2JH hub and proxy images (hack/images/; cached, 2 s when built).
$own_cluster && hack/images/build-z2jh-images.sh "$root/bin/oci-rootfs"
# The commit an admin upgrades from: its tree and operator image (cached by
# sha; with CLUSTER_STATE the caller built it and loaded it into the node).
previous=$(previous_commit)
hack/build-previous-image.sh "$previous"
prev_src=$root/bin/image/previous/$previous/src
prev_tag=previous-${previous:0:12}

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
    bin/image/test/coredns.oci.tar bin/image/test/z2jh-hub.oci.tar bin/image/test/z2jh-proxy.oci.tar
    "bin/image/previous/$previous/hubcredits.oci.tar")
  bin/hubcredits-cluster up --detach --state-dir "$state" "${imgs[@]/#/--image=}"
  t "the cluster's DNS (CoreDNS, test/cluster/coredns.yaml)"
  kubectl apply -f test/cluster/coredns.yaml >/dev/null
  kubectl -n kube-system rollout status deployment/coredns --timeout=120s
else
  trap cleanup EXIT
  t "on the running cluster in $state"
fi

ln -s "$root/charts" "$root/config" "$work/"
values=$work/hubcredits-values.yaml

t "Zero to JupyterHub 4.4.0 (helm install, test/z2jh/z2jh-values.yaml)"
kubectl create namespace jhub >/dev/null
cp "$here/z2jh-values.yaml" "$work/z2jh-values.yaml"
helm install jhub "$z2jh_chart" -n jhub -f "$work/z2jh-values.yaml" --wait --timeout 5m >/dev/null
kubectl -n jhub get pods -o wide

t "hubcredits as of $(git log -1 --format=%h "$previous") (the chart, samples and image upgraded from), docs/install.md steps 1-3"
if diff -rq "$prev_src/charts/hubcredits" charts/hubcredits >/dev/null && diff -rq "$prev_src/api" api >/dev/null; then
  echo ">>> the chart and API of $previous are this checkout's: the upgrade runs all the same, and changes neither"
fi
# The guide's values, with the image loaded into the node (pulled never), tagged as built.
doc values | sed -e "s|repository: registry.example.org/hubcredits.*|repository: ghcr.io/hubcredits/hubcredits\n  pullPolicy: Never|" \
  -e "s|^  tag: .*|  tag: \"$prev_tag\"|" > "$values"
grep -q 'pullPolicy: Never' "$values" && grep -q "tag: \"$prev_tag\"" "$values"
run_doc install "s|charts/hubcredits|$prev_src/charts/hubcredits|"
run_doc check
grep -q '^LS0t' "$work/check.out" || { echo "the CA was not injected into the webhook configuration"; exit 1; }
run_doc accounts "s|config/samples/|$prev_src/config/samples/|"
operator_images() { # the images of the operator's pods, those not being deleted
  kubectl -n jhub get pods -l app.kubernetes.io/name=hubcredits \
    -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{range .status.containerStatuses}}{{.image}}{{"\n"}}{{end}}{{end}}{{end}}' | sort -u
}
[ "$(operator_images)" = "ghcr.io/hubcredits/hubcredits:$prev_tag" ] \
  || { echo "the operator does not run the previous image: $(operator_images)"; exit 1; }
ledgers() { # every account's balance and totals, one line each
  kubectl -n jhub get ca -o jsonpath='{range .items[*]}{.metadata.name} openedAt={.status.openedAt} balance={.status.balance} charged={.status.totalCharged} refunded={.status.totalRefunded} granted={.status.totalGranted} toppedUp={.status.totalToppedUp} adjusted={.status.totalAdjusted}{"\n"}{end}'
}
# The operator opens the ledgers (openedAt, the top-ups); then they rest:
# no server runs, so nothing may move them.
rested=false prev=
for _ in $(seq 60); do
  now=$(ledgers)
  if [ "$(grep -c 'openedAt=[0-9]' <<<"$now")" = "$(kubectl -n jhub get ca -o name | wc -l)" ] && [ "$now" = "$prev" ]; then
    rested=true; break
  fi
  prev=$now; sleep 2
done
$rested || { echo "the previous operator did not open the ledgers, or they keep moving:"; echo "$now"; exit 1; }
echo "$now" > "$work/ledgers-before"
cat "$work/ledgers-before"
crds_differ=false
kubectl diff --server-side --force-conflicts -f charts/hubcredits/crds/ >/dev/null || crds_differ=true

t "docs/install.md Upgrade: the CRDs, then the release with this checkout's image tag"
run_doc upgrade-crds
sed -i -e "s|^  tag: .*|  tag: \"$version\"|" "$values"
run_doc upgrade-release
kubectl -n jhub rollout status deployment/hubcredits --timeout=180s
for _ in $(seq 60); do [ "$(operator_images)" = "ghcr.io/hubcredits/hubcredits:$version" ] && break; sleep 2; done
[ "$(operator_images)" = "ghcr.io/hubcredits/hubcredits:$version" ] \
  || { echo "after the upgrade the operator's pods run: $(operator_images)"; exit 1; }
kubectl diff --server-side --force-conflicts -f charts/hubcredits/crds/ \
  || { echo "after the upgrade the CRDs are not charts/hubcredits/crds (the diff above)"; exit 1; }
echo ">>> the CRDs are this chart's ($($crds_differ && echo "they differed before" || echo "they were the same before"))"
ledgers > "$work/ledgers-after"
diff "$work/ledgers-before" "$work/ledgers-after" \
  || { echo "the upgrade changed the accounts' balances or totals (the diff above)"; exit 1; }
echo ">>> balances and totals after the upgrade are exactly those before"
run_doc check
grep -q '^LS0t' "$work/check.out" || { echo "the CA is gone from the webhook configuration after the upgrade"; exit 1; }
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

t "docs/install.md Uninstall: the Z2JH values reverted, the webhooks, the release, the data"
cp "$here/z2jh-values.yaml" "$work/z2jh-values.yaml"   # the admin's values before step 4
run_doc uninstall-z2jh "s|jupyterhub/jupyterhub --version 4.4.0|$z2jh_chart|"
kubectl -n jhub logs deploy/hub | grep 'Using Spawner: kubespawner' \
  || { echo "after the Z2JH values were reverted, the hub does not run KubeSpawner itself (the glue is still there?)"; exit 1; }
run_doc uninstall-webhooks
run_doc uninstall-release
run_doc uninstall-data
left=$(hubcredits_left jhub)
if [ -n "$left" ]; then echo "after the documented uninstall, these are left:"; echo "$left"; exit 1; fi
echo ">>> the documented uninstall left nothing of hubcredits"
t "the hub restarts, and spawns unpriced servers"
kubectl -n jhub rollout restart deployment/hub
kubectl -n jhub rollout status deployment/hub --timeout=180s
HUB_NAMESPACE=jhub "$py" "$here/story.py" --after-uninstall
t "done"
