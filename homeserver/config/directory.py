"""Synapse's room directory settings: who may create which aliases
(`alias_creation_rules`), who may publish which rooms in the public room list
(`room_list_publication_rules`), whether the list can be searched at all
(`enable_room_list_search`), and whether creating an alias needs membership of the
room (`require_membership_for_aliases`).

A rule list is read in order; the first rule whose globs (`user_id`, `room_id`,
`alias`, `*` and `?` wildcards, case-insensitive, the whole value) all match decides
with its `action`; none matching denies; an empty list allows nothing. Unset, alias
creation is open to everyone, while only server admins may publish rooms (Synapse's
defaults since 1.126: an open directory is where spam rooms advertise); server admins
may always publish. For publication, `alias` matches when any of the room's local or
canonical aliases does, and only `alias: "*"` matches a room with none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from homeserver.config.reader import Reader, describe

DIRECTORY_KEYS = (
    "alias_creation_rules",
    "room_list_publication_rules",
    "enable_room_list_search",
    "require_membership_for_aliases",
)
_RULE_KEYS = frozenset({"user_id", "room_id", "alias", "action"})
MAX_RULES = 1000  # a config bound: each check walks the list


def _glob(pattern: str) -> re.Pattern[str]:
    escaped = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(escaped, re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class DirectoryRule:
    allow: bool
    user_id: re.Pattern[str] = field(default_factory=lambda: _glob("*"))
    room_id: re.Pattern[str] = field(default_factory=lambda: _glob("*"))
    alias: re.Pattern[str] | None = None  # None: "*", matches every room, aliases or not

    def matches(self, user_id: str, room_id: str, aliases: Sequence[str]) -> bool:
        if not self.user_id.fullmatch(user_id) or not self.room_id.fullmatch(room_id):
            return False
        if self.alias is None:
            return True
        return any(self.alias.fullmatch(a) for a in aliases)


ALLOW_ALL = (DirectoryRule(allow=True),)


def decide(
    rules: Sequence[DirectoryRule], user_id: str, room_id: str, aliases: Sequence[str]
) -> bool:
    for rule in rules:
        if rule.matches(user_id, room_id, aliases):
            return rule.allow
    return False


@dataclass(frozen=True)
class DirectoryPolicy:
    alias_creation: tuple[DirectoryRule, ...] = ALLOW_ALL
    publication: tuple[DirectoryRule, ...] = ()  # unset: only server admins publish
    room_list_search: bool = True
    require_membership_for_aliases: bool = True

    def may_create_alias(self, user_id: str, room_id: str, alias: str) -> bool:
        return decide(self.alias_creation, user_id, room_id, [alias])

    def may_publish(self, user_id: str, room_id: str, aliases: Sequence[str]) -> bool:
        return decide(self.publication, user_id, room_id, aliases)


def _rules(
    r: Reader, top: Mapping[str, Any], key: str, default: tuple[DirectoryRule, ...]
) -> tuple[DirectoryRule, ...]:
    raw = top.get(key)
    if raw is None:
        return default
    if not isinstance(raw, list):
        r.problem(key, f"expected a list of rules, got {describe(raw)}")
        return default
    if len(raw) > MAX_RULES:
        r.problem(key, f"at most {MAX_RULES} rules")
        return default
    rules = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        rule = r.mapping(item, where)
        if rule is None:
            continue
        r.check_keys(rule, _RULE_KEYS, where)
        action = rule.get("action")
        if action not in ("allow", "deny"):
            r.problem(f"{where}.action", "expected allow or deny")
            continue
        globs = {}
        for name in ("user_id", "room_id", "alias"):
            value = rule.get(name, "*")
            if not isinstance(value, str):
                r.problem(f"{where}.{name}", f"expected a glob, got {describe(value)}")
                value = "*"
            globs[name] = value
        rules.append(
            DirectoryRule(
                allow=action == "allow",
                user_id=_glob(globs["user_id"]),
                room_id=_glob(globs["room_id"]),
                alias=None if globs["alias"] == "*" else _glob(globs["alias"]),
            )
        )
    return tuple(rules)


def read_directory_policy(r: Reader, top: Mapping[str, Any]) -> DirectoryPolicy:
    return DirectoryPolicy(
        alias_creation=_rules(r, top, "alias_creation_rules", ALLOW_ALL),
        publication=_rules(r, top, "room_list_publication_rules", ()),
        room_list_search=r.bool(top, "enable_room_list_search", "", True),
        require_membership_for_aliases=r.bool(top, "require_membership_for_aliases", "", True),
    )
