"""``policies`` is pure: importing it loads no mechanism."""

from __future__ import annotations

import subprocess
import sys


def test_importing_policies_loads_neither_gateway_nor_network_libraries() -> None:
    """A fresh interpreter importing every policies module has no gateway, aiosmtpd or dns."""
    code = (
        "import sys, pkgutil, importlib, policies\n"
        "for m in pkgutil.walk_packages(policies.__path__, 'policies.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'gateway', 'aiosmtpd', 'aiosmtplib', 'dns', 'asyncio', 'socket', 'structlog'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
