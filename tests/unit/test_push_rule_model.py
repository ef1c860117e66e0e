"""Validation of client-supplied rules and the merge order of a user's ruleset."""

from __future__ import annotations

import pytest

from homeserver.push.rules import PushRule, RuleError, clean_actions, rule_from_client
from homeserver.push.ruleset import build_ruleset

ME = "@me:test.local"


def test_clean_actions_strips_historical_and_rejects_junk() -> None:
    assert clean_actions(["notify", "dont_notify", "coalesce"]) == (
        "notify",
        "dont_notify",
        "coalesce",
    )
    assert clean_actions([{"set_tweak": "sound", "value": "x"}]) == (
        {"set_tweak": "sound", "value": "x"},
    )
    for bad in (
        "notify",
        ["explode"],
        [1],
        [{"value": 1}],
        [{"set_tweak": "highlight", "value": 1}],
    ):
        with pytest.raises(RuleError):
            clean_actions(bad)


@pytest.mark.parametrize(
    ("kind", "rule_id", "body"),
    [
        ("content", "x", {"actions": []}),  # no pattern
        ("override", ".mine", {"actions": []}),  # reserved prefix
        ("override", "a/b", {"actions": []}),
        ("override", "x", {}),  # no actions
        ("override", "x", {"actions": [], "conditions": {}}),
        ("override", "x", {"actions": [], "conditions": [{"kind": "event_match"}]}),
        ("override", "x", {"actions": [], "conditions": [{"kind": "room_member_count"}]}),
        (
            "override",
            "x",
            {
                "actions": [],
                "conditions": [{"kind": "event_property_is", "key": "a", "value": 1.5}],
            },
        ),
        ("bogus", "x", {"actions": []}),
    ],
)
def test_rule_from_client_rejects(kind: str, rule_id: str, body: dict) -> None:
    with pytest.raises(RuleError):
        rule_from_client(kind, rule_id, body)


def test_room_and_sender_rules_serialise_without_conditions() -> None:
    rule = rule_from_client("room", "!r:x", {"actions": ["notify"], "conditions": [{"kind": "x"}]})
    assert rule.to_json() == {
        "rule_id": "!r:x",
        "default": False,
        "enabled": True,
        "actions": ["notify"],
    }
    content = rule_from_client("content", "cake", {"actions": [], "pattern": "cake*"})
    assert content.to_json()["pattern"] == "cake*"


def test_user_rules_rank_above_defaults_but_below_master() -> None:
    mine = PushRule("override", "mine", (), ())
    ruleset = build_ruleset(ME, {"override": [mine]}, {})
    ids = [r.rule_id for r in ruleset.by_kind["override"]]
    assert ids[:3] == [".m.rule.master", "mine", ".m.rule.suppress_notices"]
    assert set(ruleset.to_json()) == {"override", "content", "room", "sender", "underride"}
