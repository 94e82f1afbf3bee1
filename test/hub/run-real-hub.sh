#!/usr/bin/env bash
# Real-hub test of the hubcredits hub glue (charts/hubcredits/files/hubcredits_hub.py).
#
# Runs Debian's JupyterHub 3.0 on 127.0.0.1 twice, without and with the glue, against
# the API server in $KUBECONFIG, where the hubcredits operator (webhook
# pods.hubcredits.io) must be running and deny $DENIED_USER. See real_hub_e2e.py for
# what is checked and for the other variables (HUB_NAMESPACE, EXPECT_DENIAL,
# PRICED_USER, E2E_MODES, E2E_KEEP).
#
# Needs: apt-get install jupyterhub node-configurable-http-proxy python3-kubernetes
#        python3-requests
# Prints "N passed, M failed" last; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
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
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-real-hub.sh: missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

exec "$py" "$here/real_hub_e2e.py" "$@"
