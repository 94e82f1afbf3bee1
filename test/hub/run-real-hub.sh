#!/usr/bin/env bash
# Real-hub tests of the hubcredits hub glue (charts/hubcredits/files/hubcredits_hub.py),
# against the API server in $KUBECONFIG, where the hubcredits operator (webhook
# pods.hubcredits.io) must be running and deny $DENIED_USER:
#
# 1. real_hub_e2e.py: denials, on Debian's JupyterHub 3.0 without and with the glue (see
#    it for HUB_NAMESPACE, EXPECT_DENIAL, PRICED_USER, E2E_MODES, E2E_KEEP);
# 2. real_hub_credits.py: the credits on the hub pages, the profile prices, the price in
#    the progress stream, the stop notice and GET /hub/api/credits, on Debian's JupyterHub
#    3.0 and on JupyterHub 5.5 + KubeSpawner 7.1 (a venv made by
#    ../shared/third_party/hub5-venv.sh), with screenshots by headless chromium
#    (CREDITS_SCREENSHOTS: where to save them; default: a temporary directory).
#
# Needs: apt-get install jupyterhub node-configurable-http-proxy python3-kubernetes
#        python3-requests chromium; and ../shared/third_party beside the checkout (or
#        HUBCREDITS_THIRD_PARTY). Without it the JupyterHub 5.5 run is skipped with one
#        line, except in CI (CI=true), where it fails.
# Prints "N passed, M failed" last for each part; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py=${PYTHON:-/usr/bin/python3}

if [ -z "${KUBECONFIG:-}" ]; then
  echo "run-real-hub.sh: KUBECONFIG must point at the API server running the hubcredits operator" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
export KUBECONFIG
export NODE_PATH=${NODE_PATH:-/usr/share/nodejs}

missing=()
"$py" -c 'import jupyterhub' 2>/dev/null || missing+=(jupyterhub)
"$py" -c 'import kubernetes' 2>/dev/null || missing+=(python3-kubernetes)
"$py" -c 'import requests' 2>/dev/null || missing+=(python3-requests)
command -v configurable-http-proxy >/dev/null || missing+=(node-configurable-http-proxy)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-real-hub.sh: missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

rc=0
echo ">>> denials on Debian's JupyterHub 3.0 (real_hub_e2e.py)"
"$py" "$here/real_hub_e2e.py" "$@" || rc=1

shots=${CREDITS_SCREENSHOTS:-$(mktemp -d -t hubcredits-screenshots-XXXXXX)}
echo ">>> credits on Debian's JupyterHub 3.0 (real_hub_credits.py)"
CREDITS_SCREENSHOTS="$shots/hub3" "$py" "$here/real_hub_credits.py" || rc=1

third_party=${HUBCREDITS_THIRD_PARTY:-}
if [ -z "$third_party" ]; then
  for dir in "$root/../shared/third_party" "$root/../../shared/third_party"; do
    [ -x "$dir/hub5-venv.sh" ] && { third_party=$(cd "$dir" && pwd); break; }
  done
fi
echo ">>> credits on JupyterHub 5.5 + KubeSpawner 7.1 (real_hub_credits.py)"
if [ -z "$third_party" ] || [ ! -x "$third_party/hub5-venv.sh" ]; then
  if [ "${CI:-}" = true ]; then
    echo "run-real-hub.sh: ../shared/third_party (JupyterHub 5.5 wheels) is missing in CI" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  echo "run-real-hub.sh: skipped JupyterHub 5.5: no ../shared/third_party beside the checkout"
  exit $rc
fi
venv=${HUB5_VENV:-${TMPDIR:-/tmp}/hubcredits-hub5-venv-$(id -u)}
if ! "$venv/bin/python" -c 'import jupyterhub, kubespawner
assert jupyterhub.__version__.startswith("5.5"), jupyterhub.__version__' 2>/dev/null; then
  rm -rf "$venv"
  "$third_party/hub5-venv.sh" "$venv" >/dev/null || { echo "hub5-venv.sh failed"; echo "0 passed, 1 failed"; exit 1; }
fi
CREDITS_SCREENSHOTS="$shots/hub5" "$venv/bin/python" "$here/real_hub_credits.py" || rc=1
echo "screenshots: $shots"
exit $rc
