"""Rules: small pure functions, each with a stable id and a plain-language policy statement.

A rule takes the message facts and its context and returns ``None`` (no objection) or a
:class:`~policies.model.Verdict` naming a reason code. It never refuses by itself: the pipeline
applies the rule's mode (enforce, monitor, off) from the policy file, in the file's order.
The first line of a rule's docstring is what ``congvu policy explain`` prints for auditors.
"""

from policies.rules import advisories, documents, sender  # each registers its rules on import
from policies.rules.base import RULES, Rule, RuleContext, rule

__all__ = ["RULES", "Rule", "RuleContext", "advisories", "documents", "rule", "sender"]
