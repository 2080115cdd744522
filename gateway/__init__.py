"""congvu-gateway mechanism: SMTP, relay, evidence gathering, decision log, CLI.

Depends on :mod:`policies` for every decision; ``policies`` never imports this package.
"""
