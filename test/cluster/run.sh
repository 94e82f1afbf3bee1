#!/usr/bin/env bash
# make test-cluster: the whole story on a real node (internal/cluster).
#
# 0. Runs the faults of make cluster itself (TestUpFaults).
# 1. Starts a real single-node cluster (bin/hubcredits-cluster up --detach)
#    in TEST_CLUSTER_DIR (default .cluster-test) with the operator image, the
#    pause and the stub single-user images; tears it down on exit, whatever
#    happens, and fails if the host is not left as it was found.
# 2. Stands in for Zero to JupyterHub in namespace jhub (hub-standin.yaml:
#    the hub's ServiceAccount and Role, Secret "hub" with the hubcredits
#    service token, Service "hub" whose endpoint is the hub on this host).
# 3. Installs hubcredits as docs/install.md tells an admin, running the
#    guide's own blocks (marked <!-- test-cluster: NAME -->, extracted by
#    docblock.py): the values of step 1 with only the image reference and
#    pull policy changed (hubAPI.url keeps its default: CoreDNS runs),
#    the install command, the sample accounts, the checks of step 3 and the
#    dry-run spawn, then steps 5 and 6 (failurePolicy Fail, shadow off) by
#    editing the values file as the guide says and running its upgrade block.
# 4. Runs story.py on JupyterHub 5.5 + KubeSpawner 7.1 (../shared/third_party,
#    hub5-venv.sh) on this host: real pods, real charges, a stop through the
#    Hub API from the operator's pod, denials, the operator pod deleted
#    mid-billing, a lost node, the PodDisruptionBudget; then the guide's
#    uninstall, and nothing of hubcredits may be left.
# 5. On the same node: test/z2jh/run.sh (make test-z2jh), next to the real
#    Zero to JupyterHub 4.4.0 chart, its hub and proxy as pods, upgrading
#    from the previous chart and image (loaded here with the others) and
#    uninstalling.
#
# Needs root (containers, network). In CI (CI=true) nothing may be skipped;
# elsewhere a missing ../shared or a non-root user skips with one line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
py=/usr/bin/python3
test_name=test-cluster
. "$root/test/lib.sh"

[ "$(id -u)" = 0 ] || skip "a real node needs root"
third_party=$(find_third_party hub5-venv.sh)
[ -n "$third_party" ] || skip "no ../shared/third_party beside the checkout (JupyterHub 5.5 + KubeSpawner 7.1 wheels)"

state=$(realpath -m "${TEST_CLUSTER_DIR:-$root/.cluster-test}")
work=$(mktemp -d -t hubcredits-test-cluster-XXXXXX)
version=$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}.*/\1/p' charts/hubcredits/Chart.yaml)
export PATH=$root/bin:$root/bin/k8s:$PATH
export KUBECONFIG=$state/kubeconfig
start=$SECONDS

cleanup() {
  rc=$?
  set +e
  if [ $rc -ne 0 ]; then
    echo ">>> test-cluster failed: the machine (disk, memory, kernel messages)"
    df -h "$(dirname "$state")" 2>&1; free -m 2>&1; dmesg 2>/dev/null | tail -n 15
  fi
  if [ $rc -ne 0 ] && [ -s "$KUBECONFIG" ]; then
    echo ">>> test-cluster failed: the operator's logs and the pods"
    kubectl -n jhub get pods -o wide 2>&1
    for p in $(kubectl -n jhub get pods -l app.kubernetes.io/name=hubcredits -o name 2>/dev/null); do
      echo "--- $p"; kubectl -n jhub logs "$p" --tail=40 2>&1 | cut -c1-400
    done
  fi
  echo ">>> tearing the cluster down"
  bin/hubcredits-cluster down --state-dir "$state" || rc=1
  rm -rf "$work"
  echo ">>> test-cluster: $([ $rc -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - start))s"
  exit $rc
}

# The Z2JH hub and proxy images (hack/images/; cached, 2 s when built) and
# the operator image of the commit test/z2jh upgrades from (cached by sha):
# loaded with the others, for test/z2jh at the end.
hack/images/build-z2jh-images.sh "$root/bin/oci-rootfs"
previous=$(previous_commit)
hack/build-previous-image.sh "$previous"

# Bad input and faults of make cluster itself: a port in use, a previous
# run's leftovers, a failed image import, a missing binary — one sentence
# each, a non-zero exit, and nothing left on the host.
echo ">>> the machine: $(nproc) CPUs, $(awk '/MemAvailable/ {print int($2/1024) " MiB available"}' /proc/meminfo), $(df -Pm "$root" | awk 'NR==2 {print $4 " MiB free on " $6}')"
echo ">>> make cluster's faults (internal/cluster TestUpFaults)"
HUBCREDITS_REAL_NODE=1 go test -count=1 -run 'TestUpFaults' ./internal/cluster/

# A previous run killed before its teardown: tear that one down first.
bin/hubcredits-cluster down --state-dir "$state" >/dev/null
trap cleanup EXIT
bin/hubcredits-cluster up --detach --state-dir "$state" \
  --image bin/image/test/pause.oci.tar --image bin/image/test/singleuser-stub.oci.tar \
  --image "bin/image/hubcredits-$version.oci.tar" --image bin/image/test/coredns.oci.tar \
  --image bin/image/test/z2jh-hub.oci.tar --image bin/image/test/z2jh-proxy.oci.tar \
  --image "bin/image/previous/$previous/hubcredits.oci.tar"
echo ">>> the cluster's DNS (CoreDNS, test/cluster/coredns.yaml)"
kubectl apply -f test/cluster/coredns.yaml >/dev/null
kubectl -n kube-system rollout status deployment/coredns --timeout=120s

node_ip=$(kubectl get node hubcredits-node -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
hub_port=${HUB_PORT:-18081}
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The README's block runs with the cluster's state as its .cluster.
# The guide's commands run in $work as in an admin's directory: the chart and
# the samples of a checkout (symlinks), and their own hubcredits-values.yaml.
ln -s "$root/charts" "$root/config" "$root/bin" "$work/"
ln -s "$state" "$work/.cluster"
values=$work/hubcredits-values.yaml

# The README's real-node lines first, as a newcomer runs them; then that
# namespace goes, for the admin's install below.
echo ">>> README.md: readme"
"$py" "$here/docblock.py" README.md readme > "$work/readme.sh"
(cd "$work" && bash -euo pipefail "$work/readme.sh") 2>&1 | tee "$work/readme.out"
grep -q 'CreditsReserved .*This server costs 10 credits every 10m' "$work/readme.out" \
  || { echo "README: the sample pod was not priced"; exit 1; }
grep -q 'Started .*Container started' "$work/readme.out" || { echo "README: the sample pod did not start"; exit 1; }
kubectl -n jhub delete pod jupyter-alice --wait
kubectl -n jhub delete creditaccounts,billingpolicies --all --wait   # the operator closes the ledgers
helm uninstall hubcredits -n jhub --wait
kubectl delete namespace jhub --wait --timeout=120s

echo ">>> Zero to JupyterHub's objects in jhub (a hub on this host, port $hub_port)"
kubectl create namespace jhub
sed -e "s/\${NODE_IP}/$node_ip/g" -e "s/\${HUB_PORT}/$hub_port/g" -e "s/\${HUBCREDITS_TOKEN}/$token/g" \
  "$here/hub-standin.yaml" | kubectl apply -f - >/dev/null

# Step 1: the guide's values, with the image that make image built and loaded
# (pulled never). hubAPI.url keeps its default, http://hub:8081/hub/api: the
# cluster's DNS resolves the hub Service, whose endpoint is the host's hub.
doc values | sed -e "s|repository: registry.example.org/hubcredits.*|repository: ghcr.io/hubcredits/hubcredits\n  pullPolicy: Never|" \
  > "$values"
grep -q 'pullPolicy: Never' "$values"
run_doc install
run_doc check
grep -q '^LS0t' "$work/check.out" || { echo "the CA was not injected into the webhook configuration"; exit 1; }
run_doc accounts
run_doc dry-run
grep -q 'hubcredits.io/billing-value' "$work/dry-run.out" || { echo "the dry-run spawn was not priced"; exit 1; }

# Steps 5 and 6, as the guide says: edit the values file, run its upgrade.
sed -i -e 's/failurePolicy: Ignore.*/failurePolicy: Fail/' "$values"
run_doc upgrade
run_doc before-shadow-off
sed -i -e 's/shadow: true.*/shadow: false/' "$values"
run_doc upgrade
kubectl -n jhub rollout status deployment/hubcredits --timeout=120s

echo ">>> the story on JupyterHub 5.5 + KubeSpawner 7.1 (story.py)"
venv=${HUB5_VENV:-${TMPDIR:-/tmp}/hubcredits-hub5-venv-$(id -u)}
if ! "$venv/bin/python" -c 'import jupyterhub, kubespawner
assert jupyterhub.__version__.startswith("5.5"), jupyterhub.__version__' 2>/dev/null; then
  rm -rf "$venv"
  "$third_party/hub5-venv.sh" "$venv" >/dev/null
fi
CLUSTER_STATE=$state NODE_IP=$node_ip HUB_PORT=$hub_port HUBCREDITS_TOKEN=$token HUB_NAMESPACE=jhub \
  "$venv/bin/python" "$here/story.py"

# The guide's uninstall (steps 2-4; step 1 is about Z2JH's values), then
# nothing of hubcredits may be left.
run_doc uninstall-webhooks
run_doc uninstall-release
run_doc uninstall-data
left=$(hubcredits_left jhub)
if [ -n "$left" ]; then echo "after the documented uninstall, these are left:"; echo "$left"; exit 1; fi
echo ">>> the documented uninstall left nothing of hubcredits"

# Next to the real Zero to JupyterHub chart, on the same node: the stand-in's
# namespace goes first (Z2JH makes its own hub objects there).
kubectl delete namespace jhub --wait --timeout=120s
CLUSTER_STATE=$state test/z2jh/run.sh
