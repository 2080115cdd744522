#!/usr/bin/env bash
# Install everything the tests need, then run them all.
#   - Debian's postfix (real downstream MTA for the end-to-end test), when running as root
#   - a fresh virtual environment (.venv) with the package and its [test] extras
# Extra arguments go to pytest, e.g. scripts/test.sh -k relay
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages some tests need: postfix (a real MTA downstream), chromium (the HTML report
# must open in a browser), swaks (the docs show it as the stock SMTP client), dovecot-core
# (SASL logins on the submission port, for the milter), dovecot-imapd and dovecot-pop3d (real
# IMAP and POP3 logins, whose log lines congvu activity reads). Installed when missing and
# running as root.
missing=""
command -v postfix >/dev/null 2>&1 || missing="$missing postfix"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v swaks >/dev/null 2>&1 || missing="$missing swaks"
command -v dovecot >/dev/null 2>&1 || missing="$missing dovecot-core"
[ -x /usr/lib/dovecot/imap-login ] || missing="$missing dovecot-imapd"
[ -x /usr/lib/dovecot/pop3-login ] || missing="$missing dovecot-pop3d"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check gateway policies tests bench scripts
.venv/bin/ruff format --check gateway policies tests bench scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
