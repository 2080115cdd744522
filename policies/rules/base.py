"""The rule registry: :func:`rule` registers a function under its id in :data:`RULES`, with the
:class:`RuleContext` it is called with. The rule modules import this, never the package, so
that the package can import them without a circle."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policies.model import MessageFacts, Verdict
from policies.reader import TomlReader
from policies.schema import Policy

__all__ = ["RULES", "Rule", "RuleContext", "rule"]


@dataclass(frozen=True)
class RuleContext:
    """What a rule may consult besides the facts: the policy, its own options and the time."""

    policy: Policy
    options: Mapping[str, Any]
    now: datetime


RuleFunc = Callable[[MessageFacts, RuleContext], Verdict | None]
OptionReader = Callable[[TomlReader], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """A registered rule."""

    id: str
    func: RuleFunc
    option_reader: OptionReader | None = None

    @property
    def description(self) -> str:
        """The policy in one plain sentence (the docstring's first paragraph)."""
        doc = inspect.getdoc(self.func) or ""
        return " ".join(doc.split("\n\n", 1)[0].split())

    @property
    def details(self) -> str:
        """The rest of the docstring: how the rule decides, and its options."""
        doc = inspect.getdoc(self.func) or ""
        parts = doc.split("\n\n", 1)
        return parts[1].strip() if len(parts) > 1 else ""

    def read_options(self, reader: TomlReader) -> dict[str, Any]:
        """Read and validate this rule's options from its ``[[rules]]`` entry."""
        return self.option_reader(reader) if self.option_reader else {}


RULES: dict[str, Rule] = {}


def rule(rule_id: str, options: OptionReader | None = None) -> Callable[[RuleFunc], RuleFunc]:
    """Register a rule function under ``rule_id`` (kebab-case, stable: it is in policy files)."""

    def register(func: RuleFunc) -> RuleFunc:
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id!r} registered twice")
        RULES[rule_id] = Rule(rule_id, func, options)
        return func

    return register
