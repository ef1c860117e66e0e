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
from typing import Any

from .defaults import LEGACY_MENTION_RULES
from .rules import PushRule, effective_conditions, parse_member_count

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
        name = ctx.display_name
        body = lookup(event, "content.body")
        if not name or not isinstance(body, str):
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


Memo = dict[tuple[Any, ...], bool]


def _memo_key(cond: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A key for a condition whose outcome is the same for every recipient of one event
    (all but contains_display_name, whose outcome depends on the recipient's name;
    room_member_count and sender_notification_permission depend only on the event's
    room and sender). Conditions naming a user, like the mention rules, differ by value."""
    kind = cond.get("kind")
    if kind == "contains_display_name":
        return None
    value = cond.get("value")
    if not (value is None or isinstance(value, str | int | bool)):
        return None
    return (kind, cond.get("key"), cond.get("pattern"), cond.get("is"), type(value), value)


def rule_matches(
    rule: PushRule, event: Mapping[str, Any], ctx: EvalContext, memo: Memo | None = None
) -> bool:
    if not rule.enabled:
        return False
    for cond in effective_conditions(rule):
        key = _memo_key(cond) if memo is not None else None
        if key is None or memo is None:
            matched = condition_matches(cond, event, ctx)
        else:
            cached = memo.get(key)
            if cached is None:
                cached = memo[key] = condition_matches(cond, event, ctx)
            matched = cached
        if not matched:
            return False
    return True


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


def needs_display_name(rules: Iterable[PushRule]) -> bool:
    """Whether evaluating `rules` can use the user's display name (fetch it only then)."""
    return any(
        c.get("kind") == "contains_display_name" for r in rules if r.enabled for c in r.conditions
    )
