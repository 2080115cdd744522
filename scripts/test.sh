#!/usr/bin/env bash
# Install everything the tests need, then run them all.
#   - Debian's postfix (real downstream MTA for the end-to-end test), when running as root
#   - a fresh virtual environment (.venv) with the package and its [test] extras
# Extra arguments go to pytest, e.g. scripts/test.sh -k relay
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v postfix >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian package postfix (for the end-to-end test with a real MTA)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check gateway policies tests
.venv/bin/ruff format --check gateway policies tests
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
