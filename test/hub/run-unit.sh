#!/usr/bin/env bash
# Unit tests and lint of the hubcredits hub glue, with Debian's python3:
#   apt-get install python3-kubernetes jupyterhub python3-flake8
# Prints "N passed, M failed" last; exits non-zero on any failure or lint error.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py=${PYTHON:-/usr/bin/python3}
cd "$root"

lint=0
if "$py" -m flake8 --version >/dev/null 2>&1; then
  "$py" -m flake8 --max-line-length 100 charts/hubcredits/files test/hub test/cluster test/z2jh || lint=1
else
  echo "run-unit.sh: python3-flake8 is not installed; lint skipped" >&2
fi

"$py" - "$here" "$lint" <<'PY'
import sys
import unittest

here, lint = sys.argv[1], int(sys.argv[2])
suite = unittest.defaultTestLoader.discover(here, pattern="test_*.py", top_level_dir=here)
result = unittest.TextTestRunner(verbosity=1).run(suite)
bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
passed = result.testsRun - bad - len(result.skipped)
failed = bad + lint
print(f"{passed} passed, {failed} failed" + (f", {len(result.skipped)} skipped" if result.skipped else ""))
sys.exit(1 if failed else 0)
PY
