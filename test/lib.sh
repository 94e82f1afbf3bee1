# Shared by test/cluster/run.sh and test/z2jh/run.sh (sourced, bash).
# The caller sets: test_name (for messages), root (the checkout), py, and,
# before doc and run_doc, work (the admin's directory the guide's blocks run in).

# skip REASON: in CI (CI=true) a failure; elsewhere one line and exit 0.
skip() {
  if [ "${CI:-}" = true ]; then echo "$test_name: $1 (in CI this is a failure)" >&2; exit 1; fi
  echo "$test_name: skipped: $1"; exit 0
}

# find_third_party PATH: prints ../shared/third_party (beside the checkout or
# a worktree's parent, or HUBCREDITS_THIRD_PARTY) if it holds PATH.
find_third_party() {
  local dir
  for dir in ${HUBCREDITS_THIRD_PARTY:-} "$root/../shared/third_party" "$root/../../shared/third_party"; do
    [ -e "$dir/$1" ] && { (cd "$dir" && pwd); return 0; }
  done
  return 0
}

# doc NAME: the block of docs/install.md marked <!-- test-cluster: NAME -->.
doc() { "$py" "$root/test/cluster/docblock.py" "$root/docs/install.md" "$1"; }

# run_doc NAME [SED-EXPRESSION]: runs the guide's block as a shell script in
# $work (the sed expression rewrites it first, e.g. a chart reference), its
# output kept in $work/NAME.out.
run_doc() {
  echo ">>> docs/install.md: $1"
  doc "$1" | sed -e "${2:-}" >"$work/$1.sh"
  (cd "$work" && bash -euo pipefail "$work/$1.sh") 2>&1 | tee "$work/$1.out"
}

# hubcredits_left NAMESPACE: prints every object of hubcredits left in the
# cluster and the namespace (CRDs, webhook configurations, cluster RBAC,
# workloads, RBAC, Secrets, ConfigMaps, Leases, budgets, NetworkPolicies);
# nothing when the uninstall was complete. The operator's pods are
# garbage-collected after helm uninstall returns (their Deployment goes
# first): up to a minute is given for them to finish terminating.
hubcredits_left() {
  kubectl -n "$1" wait --for=delete pod -l app.kubernetes.io/name=hubcredits --timeout=60s >/dev/null 2>&1 || true
  kubectl get crd -o name | grep hubcredits.io || true
  kubectl get mutatingwebhookconfigurations,validatingwebhookconfigurations,clusterroles,clusterrolebindings -o name \
    | grep hubcredits || true
  kubectl -n "$1" get all,roles,rolebindings,serviceaccounts,secrets,configmaps,leases,poddisruptionbudgets,networkpolicies \
    -o name | grep hubcredits || true
}

# previous_commit: the commit before the last one (on the first-parent line
# to HEAD) that changed charts/hubcredits or api/, i.e. the chart and API an
# admin upgrades from. Fails with one sentence when the history is not there.
previous_commit() {
  local last
  if [ "$(git -C "$root" rev-parse --is-shallow-repository 2>/dev/null)" = true ] &&
     ! git -C "$root" fetch -q --unshallow >/dev/null 2>&1; then
    echo "$test_name: the upgrade test needs the git history (this clone is shallow and git fetch --unshallow failed)" >&2
    return 1
  fi
  last=$(git -C "$root" log -1 --first-parent --format=%H HEAD -- charts/hubcredits api/ 2>/dev/null) || true
  if [ -z "$last" ] || ! git -C "$root" rev-parse --verify --quiet "$last^1" >/dev/null; then
    echo "$test_name: the upgrade test needs the git history: no commit before the last change of charts/hubcredits or api/" >&2
    return 1
  fi
  git -C "$root" rev-parse "$last^1"
}
