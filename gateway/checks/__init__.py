"""Checks gather facts about a message; they never decide.

Each check turns part of the message into plain values of :mod:`policies.model` (DKIM
results, documents and their signature checks), for the rules in ``policies/`` to judge:

- :mod:`~gateway.checks.dns`: the TXT resolver DKIM fetches its keys with;
- :mod:`~gateway.checks.dkim`: DKIM signatures (dkimpy, through an explicit subclass);
- :mod:`~gateway.checks.documents`: which attachments are documents, and which signatures
  (embedded, detached, S/MIME) cover each;
- :mod:`~gateway.checks.signatures`: one signature validated (pyHanko), synchronous and pure;
- :mod:`~gateway.checks.trust`: the trust store (government roots, intermediates, CRLs);
- :mod:`~gateway.checks.validation`: signature validation in worker processes, with a cache
  and a deadline.
"""
