"""The push rule model: kinds, rules, actions, and validation of client-supplied rules.

Pure (no I/O). A rule is kept in the shape the client API shows it; `conditions` for
`content`, `room` and `sender` rules are implied by the kind and built on demand by
`effective_conditions`, so stored rules never carry redundant conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

KINDS: tuple[str, ...] = ("override", "content", "room", "sender", "underride")
# Kinds whose rules carry explicit conditions.
CONDITION_KINDS = frozenset({"override", "underride"})
# Actions the spec retired: accepted and kept as written (a client reads back what it
# wrote, as from Synapse), and meaning nothing when rules are evaluated.
HISTORICAL_ACTIONS = frozenset({"dont_notify", "coalesce"})
MAX_RULE_ID_LENGTH = 255
MAX_RULE_JSON_STRING = 1024


class RuleError(ValueError):
    """A client-supplied rule is malformed; the message is safe to show."""


@dataclass(frozen=True)
class PushRule:
    kind: str
    rule_id: str
    actions: tuple[Any, ...]
    conditions: tuple[dict[str, Any], ...] = ()
    pattern: str | None = None
    default: bool = False
    enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        """The client representation (push_rule.yaml)."""
        out: dict[str, Any] = {
            "rule_id": self.rule_id,
            "default": self.default,
            "enabled": self.enabled,
            "actions": list(self.actions),
        }
        if self.kind in CONDITION_KINDS:
            out["conditions"] = [dict(c) for c in self.conditions]
        if self.kind == "content" and self.pattern is not None:
            out["pattern"] = self.pattern
        return out

    @cached_property
    def checks(self) -> tuple[tuple[dict[str, Any], tuple[Any, ...] | None], ...]:
        """The effective conditions, each with its `shared_outcome_key`: worked out once
        per rule, not once per recipient of every event."""
        return tuple((c, shared_outcome_key(c)) for c in effective_conditions(self))

    @cached_property
    def shared_key(self) -> tuple[Any, ...] | None:
        """A key for the whole rule's outcome when no condition depends on the
        recipient (most server-default rules): evaluated once per event then."""
        keys = [key for _, key in self.checks]
        if any(key is None for key in keys):
            return None
        return ("rule", *keys)

    def with_enabled(self, enabled: bool) -> PushRule:
        return replace(self, enabled=enabled)

    def with_actions(self, actions: tuple[Any, ...]) -> PushRule:
        return replace(self, actions=actions)


def effective_conditions(rule: PushRule) -> tuple[dict[str, Any], ...]:
    """The conditions the evaluator checks: explicit ones, or those a kind implies."""
    if rule.kind == "room":
        return ({"kind": "event_match", "key": "room_id", "pattern": rule.rule_id},)
    if rule.kind == "sender":
        return ({"kind": "event_match", "key": "sender", "pattern": rule.rule_id},)
    if rule.kind == "content":
        return ({"kind": "event_match", "key": "content.body", "pattern": rule.pattern or ""},)
    return rule.conditions


def shared_outcome_key(cond: dict[str, Any]) -> tuple[Any, ...] | None:
    """A key for a condition whose outcome is the same for every recipient of one event
    (all but contains_display_name, whose outcome depends on the recipient's name;
    room_member_count and sender_notification_permission depend only on the event's
    room and sender). Conditions naming a user, like the mention rules, differ by value.
    None: evaluate it per recipient."""
    kind = cond.get("kind")
    if kind == "contains_display_name":
        return None
    fields = (kind, cond.get("key"), cond.get("pattern"), cond.get("is"), cond.get("value"))
    if not all(f is None or isinstance(f, str | int | bool) for f in fields):
        return None  # (malformed: never matches, and a list cannot be a key)
    return (*fields[:4], type(fields[4]), fields[4])


def clean_actions(actions: Any) -> tuple[Any, ...]:
    """Validate a client's `actions` list (historical actions are kept, unused)."""
    if not isinstance(actions, list):
        raise RuleError("actions must be a list")
    out: list[Any] = []
    for action in actions:
        if isinstance(action, str):
            if action not in HISTORICAL_ACTIONS and action != "notify":
                raise RuleError(f"Unrecognised action {action[:50]!r}")
            out.append(action)
        elif isinstance(action, dict):
            tweak = action.get("set_tweak")
            if not isinstance(tweak, str) or not tweak:
                raise RuleError("An object action must have a string 'set_tweak'")
            if set(action) - {"set_tweak", "value"}:
                raise RuleError("A set_tweak action may only have 'set_tweak' and 'value'")
            if tweak == "highlight" and "value" in action and not isinstance(action["value"], bool):
                raise RuleError("The highlight tweak's value must be a boolean")
            out.append(dict(action))
        else:
            raise RuleError("Each action must be a string or an object")
    return tuple(out)


_VALUE_TYPES = (str, int, bool, type(None))
_MAX_SAFE_INT = 2**53 - 1


def _check_value(value: Any) -> None:
    if isinstance(value, float) or not isinstance(value, _VALUE_TYPES):
        raise RuleError("value must be a string, integer, boolean or null")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_SAFE_INT:
        raise RuleError("integer value out of range")


def _require_str(cond: dict[str, Any], name: str) -> None:
    value = cond.get(name)
    if not isinstance(value, str):
        raise RuleError(f"{cond.get('kind')} condition needs a string '{name}'")
    if len(value) > MAX_RULE_JSON_STRING:
        raise RuleError(f"'{name}' is too long")


def clean_conditions(conditions: Any) -> tuple[dict[str, Any], ...]:
    """Validate a client's `conditions`. Unknown kinds are kept (they never match)."""
    if conditions is None:
        return ()
    if not isinstance(conditions, list):
        raise RuleError("conditions must be a list")
    out: list[dict[str, Any]] = []
    for cond in conditions:
        if not isinstance(cond, dict) or not isinstance(cond.get("kind"), str):
            raise RuleError("Each condition must be an object with a string 'kind'")
        kind = cond["kind"]
        if kind == "event_match":
            _require_str(cond, "key")
            _require_str(cond, "pattern")
        elif kind in ("event_property_is", "event_property_contains"):
            _require_str(cond, "key")
            if "value" not in cond:
                raise RuleError(f"{kind} condition needs a 'value'")
            _check_value(cond["value"])
        elif kind == "room_member_count":
            if not isinstance(cond.get("is"), str) or parse_member_count(cond["is"]) is None:
                raise RuleError("room_member_count needs 'is' like '2', '>=10' or '<5'")
        elif kind == "sender_notification_permission":
            _require_str(cond, "key")
        out.append(dict(cond))
    return tuple(out)


def parse_member_count(spec: str) -> tuple[str, int] | None:
    """'>=10' -> ('>=', 10); a bare number means '=='. None when malformed."""
    for op in ("==", "<=", ">=", "<", ">"):
        if spec.startswith(op):
            number = spec[len(op) :]
            break
    else:
        op, number = "==", spec
    if not number.isdigit() or not number.isascii():
        return None
    return op, int(number)


def check_rule_id(kind: str, rule_id: str) -> None:
    """What PUT accepts as a user rule ID (the spec reserves '.' and bans slashes)."""
    if not rule_id or len(rule_id) > MAX_RULE_ID_LENGTH:
        raise RuleError("rule_id must be 1-255 characters")
    if rule_id.startswith("."):
        raise RuleError("rule_ids starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise RuleError("rule_id may not contain slashes or backslashes")


def rule_from_client(kind: str, rule_id: str, body: dict[str, Any]) -> PushRule:
    """Build a user rule from a PUT body (validated)."""
    if kind not in KINDS:
        raise RuleError(f"Unknown rule kind {kind[:30]!r}")
    check_rule_id(kind, rule_id)
    if "actions" not in body:
        raise RuleError("Missing 'actions'")
    actions = clean_actions(body["actions"])
    conditions: tuple[dict[str, Any], ...] = ()
    pattern: str | None = None
    if kind in CONDITION_KINDS:
        conditions = clean_conditions(body.get("conditions"))
    elif kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise RuleError("content rules need a string 'pattern'")
        if len(pattern) > MAX_RULE_JSON_STRING:
            raise RuleError("pattern is too long")
    return PushRule(kind, rule_id, actions, conditions, pattern, default=False, enabled=True)


def notify_and_highlight(actions: tuple[Any, ...] | list[Any]) -> tuple[bool, bool]:
    """(does it notify, is it highlighted) for an actions list."""
    notify = "notify" in actions
    highlight = False
    for action in actions:
        if isinstance(action, dict) and action.get("set_tweak") == "highlight":
            highlight = action.get("value", True) is True
    return notify, highlight
