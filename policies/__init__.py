"""Pure decision logic for congvu-gateway: value types, the reason table, rules, the pipeline,
the policy schema and the default policy data.

Nothing here does I/O beyond reading a policy file when asked, reads the clock, or imports
``gateway``, ``aiosmtpd`` or ``dns``: the same inputs always give the same decision.
"""

from policies.loader import load_policy, parse_policy
from policies.model import (
    Action,
    AddressField,
    Attachment,
    Decision,
    Finding,
    MessageFacts,
    Mode,
    Reply,
    Verdict,
)
from policies.pipeline import check_recipient, evaluate, refusal
from policies.reader import ConfigError
from policies.reasons import REASONS, Reason, reply_for
from policies.schema import Policy, RuleConfig

__all__ = [
    "REASONS",
    "Action",
    "AddressField",
    "Attachment",
    "ConfigError",
    "Decision",
    "Finding",
    "MessageFacts",
    "Mode",
    "Policy",
    "Reason",
    "Reply",
    "RuleConfig",
    "Verdict",
    "check_recipient",
    "evaluate",
    "load_policy",
    "parse_policy",
    "refusal",
    "reply_for",
]
