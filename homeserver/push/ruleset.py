"""A user's effective ruleset: the defaults merged with their own rules and overrides.

Pure. Priority order for evaluation: `.m.rule.master`, then per kind (override,
content, room, sender, underride) the user's rules in their order followed by the
server defaults of that kind, as the spec requires ("server-default rules operate at a
lower priority than user-defined rules, except for the master rule").
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .defaults import MASTER_RULE_ID, RECIPIENT_DEPENDENT_DEFAULTS, default_rules
from .rules import KINDS, PushRule


@dataclass(frozen=True)
class DefaultOverride:
    """What a user changed on a server-default rule (None = unchanged)."""

    enabled: bool | None = None
    actions: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Ruleset:
    by_kind: Mapping[str, tuple[PushRule, ...]]
    ordered: tuple[PushRule, ...]

    @cached_property
    def per_recipient(self) -> tuple[bool, ...]:
        """Per rule in `ordered`: whether its outcome for an event depends on whose
        rules these are (it names the user, or needs the user's display name)."""
        return tuple(
            (r.default and r.rule_id in RECIPIENT_DEPENDENT_DEFAULTS) or r.shared_key is None
            for r in self.ordered
        )

    @cached_property
    def signature(self) -> str:
        """Equal for rulesets that match any event alike except in the rules that depend
        on the recipient (users on the server defaults share one): the evaluator works
        out once per event and signature which rules are left to check per recipient.
        A server-default rule's conditions follow from its ID (and the user); a user's
        own rule is represented by its conditions. Interned, so comparing two users'
        signatures is an identity check."""
        shape = tuple(
            (r.rule_id, r.enabled, varies, "default" if r.default else r.shared_key)
            for r, varies in zip(self.ordered, self.per_recipient, strict=True)
        )
        return sys.intern(repr(shape))

    def find(self, kind: str, rule_id: str) -> PushRule | None:
        for rule in self.by_kind.get(kind, ()):
            if rule.rule_id == rule_id:
                return rule
        return None

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        """push_ruleset.yaml: every kind, rules in priority order."""
        return {kind: [r.to_json() for r in self.by_kind.get(kind, ())] for kind in KINDS}


def build_ruleset(
    user_id: str,
    user_rules: Mapping[str, Sequence[PushRule]],
    overrides: Mapping[str, DefaultOverride],
) -> Ruleset:
    """Merge `user_rules` (kind -> rules in priority order) with the defaults."""
    defaults = default_rules(user_id)
    by_kind: dict[str, tuple[PushRule, ...]] = {}
    master: PushRule | None = None
    for kind in KINDS:
        merged: list[PushRule] = []
        for rule in defaults[kind]:
            change = overrides.get(rule.rule_id)
            if change is not None:
                if change.enabled is not None:
                    rule = rule.with_enabled(change.enabled)
                if change.actions is not None:
                    rule = rule.with_actions(change.actions)
            if rule.rule_id == MASTER_RULE_ID:
                master = rule
            else:
                merged.append(rule)
        user = list(user_rules.get(kind, ()))
        by_kind[kind] = tuple(([master] if kind == "override" and master else []) + user + merged)
    ordered = tuple(r for kind in KINDS for r in by_kind[kind])
    return Ruleset(by_kind, ordered)
