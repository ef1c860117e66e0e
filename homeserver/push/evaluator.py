"""Push rule evaluation: which actions a ruleset gives an event. Pure (no I/O).

Everything the conditions need about the room (member count, the sender's power
level, the notification levels, the user's display name) comes in an `EvalContext`
built by the caller, so this module is table-testable against the spec's examples.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .defaults import LEGACY_MENTION_RULES, RECIPIENT_DEPENDENT_DEFAULTS
from .rules import PushRule, parse_member_count

if TYPE_CHECKING:
    from .ruleset import Ruleset

_MISSING = object()
# The spec's word characters; anything else (or either end) is a word boundary.
_WORD = "A-Za-z0-9_"
MAX_MATCH_LENGTH = 65536  # no event is bigger; bounds the regex work per value


@dataclass(frozen=True)
class EvalContext:
    member_count: int
    sender_power_level: float
    # notifications.<key> level from the room's power levels (default 50).
    notification_level: Callable[[str], int]
    display_name: str | None = None
    # False: the caller has not looked the name up (it costs a read of every member of
    # the room); a rule that gets as far as needing it raises DisplayNameNeeded, and the
    # caller fetches it and evaluates again. Most events never get that far.
    display_name_known: bool = True


class DisplayNameNeeded(Exception):
    """An evaluation reached a contains_display_name condition without the name."""


@lru_cache(maxsize=4096)
def split_path(key: str) -> tuple[str, ...]:
    """A dot-separated property path into its parts (appendices: `\\.` and `\\\\`
    escape a literal dot and backslash; any other backslash is literal)."""
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(key):
        ch = key[i]
        if ch == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            buf.append(key[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return tuple(parts)


def lookup(event: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted path, or `_MISSING`."""
    value: Any = event
    for part in split_path(key):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


@lru_cache(maxsize=4096)
def glob_regex(pattern: str, words: bool) -> re.Pattern[str]:
    """The glob as a case-insensitive regex: whole value, or (`words`) any substring
    starting and ending at word boundaries."""
    out: list[str] = []
    for ch in re.sub(r"\*+", "*", pattern):
        if ch == "*":
            out.append(".*?")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
    body = "".join(out)
    if words:
        body = f"(?<![{_WORD}]){body}(?![{_WORD}])"
    else:
        body = f"\\A{body}\\Z"
    return re.compile(body, re.IGNORECASE | re.DOTALL)


@lru_cache(maxsize=4096)
def _display_name_regex(name: str) -> re.Pattern[str]:
    return re.compile(f"(?<![{_WORD}]){re.escape(name)}(?![{_WORD}])", re.IGNORECASE | re.DOTALL)


# The only characters outside ASCII that a case-insensitive `re` matches to an ASCII
# character (checked over all of Unicode): mapped first, a lowered body holds an ASCII
# name as a substring wherever the regex could match it.
_ASCII_LOOKALIKES = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


@lru_cache(maxsize=16)
def _folded(text: str) -> str:
    """`text` lowered with the look-alikes mapped: once per message body, not once per
    member it is checked for (the body is the same object for every member)."""
    return text.translate(_ASCII_LOOKALIKES).lower()


def _could_contain(literal: str, text: str) -> bool:
    """False only when a case-insensitive regex could not find `literal` in `text`.
    Every local member is checked against every message of a room: this rules out
    nearly all of them without compiling (and caching) a regex per member."""
    return not literal.isascii() or literal.lower() in _folded(text)


def _mentions_display_name(name: str, body: str) -> bool:
    """Whether `body` names `name` as a whole word, ignoring case."""
    body = body[:MAX_MATCH_LENGTH]
    return _could_contain(name, body) and _display_name_regex(name).search(body) is not None


def glob_matches(pattern: str, value: str, *, words: bool = False) -> bool:
    value = value[:MAX_MATCH_LENGTH]
    if words and "*" not in pattern and "?" not in pattern and not _could_contain(pattern, value):
        return False  # (a user-name rule's pattern is a literal differing per user)
    return glob_regex(pattern, words).search(value) is not None


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | bool) and not isinstance(value, float)


def _same(a: Any, b: Any) -> bool:
    """Canonical-JSON equality: no casting between booleans and integers."""
    return type(a) is type(b) and a == b


def condition_matches(cond: Mapping[str, Any], event: Mapping[str, Any], ctx: EvalContext) -> bool:
    """One condition against one event; unknown or malformed conditions never match."""
    kind = cond.get("kind")
    if kind == "event_match":
        key, pattern = cond.get("key"), cond.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        value = lookup(event, key)
        if not isinstance(value, str):
            return False
        return glob_matches(pattern, value, words=key == "content.body")
    if kind == "event_property_is":
        key = cond.get("key")
        if not isinstance(key, str) or "value" not in cond:
            return False
        value = lookup(event, key)
        return value is not _MISSING and _scalar(value) and _same(value, cond["value"])
    if kind == "event_property_contains":
        key = cond.get("key")
        if not isinstance(key, str) or "value" not in cond:
            return False
        value = lookup(event, key)
        if not isinstance(value, list):
            return False
        wanted = cond["value"]
        return any(_scalar(item) and _same(item, wanted) for item in value)
    if kind == "contains_display_name":
        body = lookup(event, "content.body")
        if not isinstance(body, str):
            return False
        if not ctx.display_name_known:
            raise DisplayNameNeeded
        name = ctx.display_name
        if not name:
            return False
        return _mentions_display_name(name, body)
    if kind == "room_member_count":
        spec = cond.get("is")
        parsed = parse_member_count(spec) if isinstance(spec, str) else None
        if parsed is None:
            return False
        op, number = parsed
        n = ctx.member_count
        return {
            "==": n == number,
            "<": n < number,
            ">": n > number,
            "<=": n <= number,
            ">=": n >= number,
        }[op]
    if kind == "sender_notification_permission":
        key = cond.get("key")
        if not isinstance(key, str):
            return False
        return ctx.sender_power_level >= ctx.notification_level(key)
    return False


# Outcomes shared by every recipient of one event: conditions' and rules' (bool), and
# per ruleset signature the rules left to check per recipient (evaluate_ruleset).
Memo = dict[tuple[Any, ...], Any]


def _holds(
    cond: Mapping[str, Any],
    key: tuple[Any, ...] | None,
    event: Mapping[str, Any],
    ctx: EvalContext,
    memo: Memo | None,
) -> bool:
    """One condition, through the memo when its outcome is shared (`key`)."""
    if key is None or memo is None:
        return condition_matches(cond, event, ctx)
    matched: bool | None = memo.get(key)
    if matched is None:
        matched = memo[key] = condition_matches(cond, event, ctx)
    return matched


def _conditions_hold(
    rule: PushRule, event: Mapping[str, Any], ctx: EvalContext, memo: Memo | None
) -> bool:
    # A loop, not all() over a generator: this runs per recipient, and is 1.5x faster.
    for cond, key in rule.checks:  # noqa: SIM110
        if not _holds(cond, key, event, ctx, memo):
            return False
    return True


def rule_matches(
    rule: PushRule, event: Mapping[str, Any], ctx: EvalContext, memo: Memo | None = None
) -> bool:
    """Whether every condition of an enabled rule holds. With a `memo` shared by all
    recipients of an event, a rule (or condition) whose outcome does not depend on the
    recipient is evaluated once per event: a message to a room of thousands costs a
    dictionary lookup per rule and recipient."""
    if not rule.enabled:
        return False
    if memo is None:
        return _conditions_hold(rule, event, ctx, None)
    shared = rule.shared_key
    if shared is None:
        return _conditions_hold(rule, event, ctx, memo)
    matched = memo.get(shared)
    if matched is None:
        matched = memo[shared] = _conditions_hold(rule, event, ctx, memo)
    return matched


def evaluate(
    rules: Iterable[PushRule],
    event: Mapping[str, Any],
    ctx: EvalContext,
    memo: Memo | None = None,
) -> PushRule | None:
    """The first (highest priority) enabled rule matching `event`, or None.

    Pass one `memo` for all recipients of an event: the conditions they share (most of
    the default rules) are then evaluated once per event, not once per recipient.

    An event with `m.mentions` says whom it mentions: the deprecated body-matching
    mention rules are skipped for it (as Synapse does; see push.defaults)."""
    content = event.get("content")
    legacy_off = isinstance(content, Mapping) and "m.mentions" in content
    for rule in rules:
        if legacy_off and rule.rule_id in LEGACY_MENTION_RULES:
            continue
        if rule_matches(rule, event, ctx, memo):
            return rule
    return None


def evaluate_ruleset(
    ruleset: Ruleset, event: Mapping[str, Any], ctx: EvalContext, memo: Memo
) -> PushRule | None:
    """`evaluate` for one of many recipients of an event. Recipients whose rulesets
    share a signature (every user on the server defaults) share a plan made once per
    event: the rules that depend on the recipient and come before the first rule that
    matches for all of them. Each recipient then checks only those (for a message, the
    user's own mention rules) instead of every rule in turn."""
    rules = ruleset.ordered
    key = ("plan", ruleset.signature)
    plan = memo.get(key)
    if plan is None:
        plan = memo[key] = _plan(ruleset, event, ctx, memo)
    candidates, terminal = plan
    for index in candidates:
        rule = rules[index]
        if _conditions_hold(rule, event, ctx, memo):
            return rule
    return rules[terminal] if terminal is not None else None


def _plan(
    ruleset: Ruleset, event: Mapping[str, Any], ctx: EvalContext, memo: Memo
) -> tuple[tuple[int, ...], int | None]:
    """The positions of the enabled rules that depend on the recipient, in order, up to
    the first enabled rule that matches for every recipient (its position, or None)."""
    content = event.get("content")
    legacy_off = isinstance(content, Mapping) and "m.mentions" in content
    candidates: list[int] = []
    for index, (rule, varies) in enumerate(
        zip(ruleset.ordered, ruleset.per_recipient, strict=True)
    ):
        if not rule.enabled or (legacy_off and rule.rule_id in LEGACY_MENTION_RULES):
            continue
        if varies:
            if rule.default and _fails_for_everyone(rule, event, ctx, memo):
                continue  # (an invite rule, for an event that is no invite)
            candidates.append(index)
        elif rule_matches(rule, event, ctx, memo):
            return tuple(candidates), index
    return tuple(candidates), None


def _fails_for_everyone(
    rule: PushRule, event: Mapping[str, Any], ctx: EvalContext, memo: Memo
) -> bool:
    """Whether a server-default rule that names its user fails for this event whoever
    the user: one of its conditions that are the same for every user fails."""
    for position in RECIPIENT_DEPENDENT_DEFAULTS.get(rule.rule_id, ()):
        if not _holds(*rule.checks[position], event, ctx, memo):
            return True
    return False
