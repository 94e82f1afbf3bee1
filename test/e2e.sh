#!/usr/bin/env bash
# End to end on the operator binary: starts `hubcredits-dev` (local control
# plane + operator + webhook) as a user of the README would, tells the demo
# story (make demo), then runs the hub-side glue against a real JupyterHub
# ("hubalice" has enough credits, "hubcarol" too few), and stops everything.
# Called by `make test`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state=$(mktemp -d)
log=$state/manager.log
bin/hubcredits-dev --state-dir "$state" -- --metrics-bind-address=0 --health-probe-bind-address=0 >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$state"; }
trap cleanup EXIT
export KUBECONFIG=$state/kubeconfig
for _ in $(seq 1 120); do
  [ -s "$KUBECONFIG" ] && grep -q '"Serving webhook server"' "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "0 passed, 1 failed"; exit 1; }
  sleep 0.5
done
rc=0
echo ">>> make demo"
go run ./test/demo || rc=$?
kubectl=bin/k8s/kubectl
$kubectl apply -f - >/dev/null <<'YAML'
apiVersion: hubcredits.io/v1alpha1
kind: CreditAccount
metadata: {name: hubalice, namespace: default}
spec: {users: [hubalice], cap: 1000}
---
apiVersion: hubcredits.io/v1alpha1
kind: CreditAccount
metadata: {name: hubcarol, namespace: default}
spec: {users: [hubcarol], cap: 100, initialBalance: 4}
YAML
echo ">>> the hub-side glue on a real JupyterHub"
DENIED_USER=hubcarol PRICED_USER=hubalice HUB_NAMESPACE=default test/hub/run-real-hub.sh || rc=$?
if grep -q "PLANTED\|JUPYTERHUB_API_TOKEN" "$log"; then
  echo "the operator's log holds a Hub token or pod env"; rc=1
fi
exit $rc
