"""The spec's predefined (server-default) push rules, v1.19, in the spec's order.

Order is priority within each kind. `.m.rule.master` is always evaluated first (the
ruleset puts it ahead of user overrides); `.m.rule.suppress_edits` is the last override
rule, after the mention rules, so an edit that newly mentions someone (its `m.mentions`
names only the newly mentioned) still notifies them, and any other edit does not.

The body-matching rules (`.m.rule.contains_display_name`, `.m.rule.contains_user_name`,
`.m.rule.roomnotif`), which v1.17 removed from the spec's list (MSC4210), are still
served, as Synapse serves them: the spec lets a server define server-default rules of
its own, and Element shows them in its notification settings and warns when they are
missing. They are skipped for events that carry `m.mentions` (LEGACY_MENTION_RULES):
such an event says whom it mentions, which is what MSC4210 wants.
"""

from __future__ import annotations

from typing import Any

from .rules import PushRule

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _rule(
    kind: str,
    rule_id: str,
    conditions: list[dict[str, Any]],
    actions: list[Any],
    enabled: bool = True,
) -> PushRule:
    return PushRule(
        kind, rule_id, tuple(actions), tuple(conditions), None, default=True, enabled=enabled
    )


MASTER_RULE_ID = ".m.rule.master"
# Rules a sender's `m.mentions` replaces: not applied to events that carry it.
LEGACY_MENTION_RULES = frozenset(
    {".m.rule.contains_display_name", ".m.rule.contains_user_name", ".m.rule.roomnotif"}
)


def default_override_rules(user_id: str) -> list[PushRule]:
    """Default override rules for `user_id`, highest priority first (master included)."""
    return [
        _rule("override", MASTER_RULE_ID, [], [], enabled=False),
        _rule("override", ".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        _rule(
            "override",
            ".m.rule.invite_for_me",
            [
                _match("type", "m.room.member"),
                _match("content.membership", "invite"),
                _match("state_key", user_id),
            ],
            ["notify", _SOUND_DEFAULT],
        ),
        _rule("override", ".m.rule.member_event", [_match("type", "m.room.member")], []),
        _rule(
            "override",
            ".m.rule.is_user_mention",
            [
                {
                    "kind": "event_property_contains",
                    "key": "content.m\\.mentions.user_ids",
                    "value": user_id,
                }
            ],
            ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
        ),
        _rule(
            "override",
            ".m.rule.contains_display_name",
            [{"kind": "contains_display_name"}],
            ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
        ),
        _rule(
            "override",
            ".m.rule.is_room_mention",
            [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            ["notify", _HIGHLIGHT],
        ),
        _rule(
            "override",
            ".m.rule.roomnotif",
            [
                {"kind": "sender_notification_permission", "key": "room"},
                _match("content.body", "@room"),
            ],
            ["notify", _HIGHLIGHT],
        ),
        _rule(
            "override",
            ".m.rule.tombstone",
            [_match("type", "m.room.tombstone"), _match("state_key", "")],
            ["notify", _HIGHLIGHT],
        ),
        _rule("override", ".m.rule.reaction", [_match("type", "m.reaction")], []),
        _rule(
            "override",
            ".m.rule.room.server_acl",
            [_match("type", "m.room.server_acl"), _match("state_key", "")],
            [],
        ),
        _rule(
            "override",
            ".m.rule.suppress_edits",
            [
                {
                    "kind": "event_property_is",
                    "key": "content.m\\.relates_to.rel_type",
                    "value": "m.replace",
                }
            ],
            [],
        ),
    ]


def default_content_rules(user_id: str) -> list[PushRule]:
    """The deprecated `.m.rule.contains_user_name`: the localpart as a body word."""
    localpart = user_id[1:].partition(":")[0]
    return [
        PushRule(
            "content",
            ".m.rule.contains_user_name",
            ("notify", _SOUND_DEFAULT, _HIGHLIGHT),
            (),
            localpart,
            default=True,
            enabled=True,
        )
    ]


def default_underride_rules() -> list[PushRule]:
    """Default underride rules, highest priority first."""
    one_to_one = {"kind": "room_member_count", "is": "2"}
    return [
        _rule(
            "underride",
            ".m.rule.call",
            [_match("type", "m.call.invite")],
            ["notify", {"set_tweak": "sound", "value": "ring"}],
        ),
        _rule(
            "underride",
            ".m.rule.encrypted_room_one_to_one",
            [one_to_one, _match("type", "m.room.encrypted")],
            ["notify", _SOUND_DEFAULT],
        ),
        _rule(
            "underride",
            ".m.rule.room_one_to_one",
            [one_to_one, _match("type", "m.room.message")],
            ["notify", _SOUND_DEFAULT],
        ),
        _rule("underride", ".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
        _rule("underride", ".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
    ]


def default_rules(user_id: str) -> dict[str, list[PushRule]]:
    """Every default rule by kind (room and sender have none). The rules that do not
    name the user are the same objects for everyone: a ruleset is cached per user
    (10,000 of them), and so is what the evaluator works out per rule (its condition
    keys, about half a kilobyte a rule)."""
    built = _build_default_rules(user_id)
    return {
        kind: [_SHARED_RULES.get(rule.rule_id, rule) for rule in rules]
        for kind, rules in built.items()
    }


def _build_default_rules(user_id: str) -> dict[str, list[PushRule]]:
    return {
        "override": default_override_rules(user_id),
        "content": default_content_rules(user_id),
        "room": [],
        "sender": [],
        "underride": default_underride_rules(),
    }


def _recipient_dependent_rules() -> dict[str, tuple[int, ...]]:
    """Default rules whose conditions name their user (or need the user's display name):
    the same rule ID matches differently for different recipients of an event. Each
    with the positions (in `PushRule.checks`) of its conditions that are the same for
    every user: when one of those fails for an event, the rule fails for everyone.
    Found by building the defaults for two users, so a change to the defaults cannot
    forget to list a rule here."""
    one = _build_default_rules("@one:one.invalid")
    other = _build_default_rules("@other:other.invalid")
    return {
        a.rule_id: tuple(
            i
            for i, (mine, theirs) in enumerate(zip(a.checks, b.checks, strict=True))
            if mine == theirs and mine[1] is not None
        )
        for kind in one
        for a, b in zip(one[kind], other[kind], strict=True)
        if a.checks != b.checks or a.shared_key is None
    }


RECIPIENT_DEPENDENT_DEFAULTS = _recipient_dependent_rules()
# The default rules that are the same for every user, one object each (default_rules).
_SHARED_RULES = {
    rule.rule_id: rule
    for rules in _build_default_rules("@anyone:anyone.invalid").values()
    for rule in rules
    if rule.rule_id not in RECIPIENT_DEPENDENT_DEFAULTS
}
