"""Push rule evaluation: conditions per the spec's examples, and the default ruleset's
behaviour on representative events."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.push.defaults import default_rules
from homeserver.push.evaluator import (
    EvalContext,
    condition_matches,
    evaluate,
    glob_matches,
    split_path,
)
from homeserver.push.rules import notify_and_highlight
from homeserver.push.ruleset import DefaultOverride, build_ruleset

ME = "@me:test.local"


def ctx(members: int = 5, sender_level: float = 0, room_level: int = 50, name: str | None = None):
    return EvalContext(
        member_count=members,
        sender_power_level=sender_level,
        notification_level=lambda key: room_level if key == "room" else 50,
        display_name=name,
    )


def msg(body: str = "hello", **content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "sender": "@other:test.local",
        "room_id": "!r:test.local",
        "content": {"msgtype": "m.text", "body": body, **content},
    }


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("content.body", ["content", "body"]),
        ("content.m\\.relates_to", ["content", "m.relates_to"]),
        ("content.m\\\\foo", ["content", "m\\foo"]),
        ("content.m\\xfoo", ["content", "m\\xfoo"]),
        ("content.m\\.mentions.user_ids", ["content", "m.mentions", "user_ids"]),
    ],
)
def test_split_path_escapes(key: str, parts: list[str]) -> None:
    assert list(split_path(key)) == parts


def test_event_match_glob_whole_value_case_insensitive() -> None:
    topic = {"type": "m.room.topic", "content": {"topic": "Lunch plans"}}
    cond = {"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}
    assert condition_matches(cond, topic, ctx())
    assert condition_matches(cond, {"content": {"topic": "LUNCH"}}, ctx())
    for value in (" lunch", "lunc", None, 5):
        assert not condition_matches(cond, {"content": {"topic": value}}, ctx()), value
    assert not condition_matches(cond, {"content": {}}, ctx())
    star = {"kind": "event_match", "key": "content.topic", "pattern": "*"}
    assert not condition_matches(star, {"content": {}}, ctx())


def test_event_match_body_word_boundaries() -> None:
    cond = {"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}
    for body in ("An example event.", "exple", "An exciting triple-whammy"):
        assert condition_matches(cond, msg(body), ctx()), body
    for body in ("examples", "counterexample", "exampled_x"):
        assert not condition_matches(cond, msg(body), ctx()), body
    assert glob_matches("cake", "I like CAKE!", words=True)
    assert not glob_matches("cake", "cakes", words=True)


def test_event_property_is_is_exact_and_typed() -> None:
    cond = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}
    assert condition_matches(cond, {"content": {"m.federate": True}}, ctx())
    assert not condition_matches(cond, {"content": {"m.federate": "true"}}, ctx())
    assert not condition_matches(cond, {"content": {"m.federate": 1}}, ctx())
    one = {"kind": "event_property_is", "key": "content.n", "value": 1}
    assert not condition_matches(one, {"content": {"n": True}}, ctx())
    assert condition_matches(one, {"content": {"n": 1}}, ctx())
    null = {"kind": "event_property_is", "key": "content.n", "value": None}
    assert condition_matches(null, {"content": {"n": None}}, ctx())
    assert not condition_matches(null, {"content": {}}, ctx())


def test_event_property_contains() -> None:
    cond = {
        "kind": "event_property_contains",
        "key": "content.alt_aliases",
        "value": "#myroom:example.com",
    }
    ok = {"content": {"alt_aliases": ["#somewhere:example.org", "#myroom:example.com"]}}
    assert condition_matches(cond, ok, ctx())
    assert not condition_matches(cond, {"content": {"alt_aliases": [":example.com"]}}, ctx())
    assert not condition_matches(cond, {"content": {"alt_aliases": "#myroom:example.com"}}, ctx())


@pytest.mark.parametrize(
    ("spec", "count", "expected"),
    [
        ("2", 2, True),
        ("2", 3, False),
        ("==2", 2, True),
        ("<10", 9, True),
        ("<10", 10, False),
        (">3", 4, True),
        ("<=10", 10, True),
        (">=10", 9, False),
        ("bogus", 2, False),
    ],
)
def test_room_member_count(spec: str, count: int, expected: bool) -> None:
    cond = {"kind": "room_member_count", "is": spec}
    assert condition_matches(cond, msg(), ctx(members=count)) is expected


def test_contains_display_name_and_unknown_conditions() -> None:
    cond = {"kind": "contains_display_name"}
    assert condition_matches(cond, msg("hey Alice!"), ctx(name="alice"))
    assert not condition_matches(cond, msg("Alicey"), ctx(name="alice"))
    assert not condition_matches(cond, msg("hey alice"), ctx(name=None))
    assert not condition_matches({"kind": "org.example.future"}, msg(), ctx())


@pytest.mark.parametrize(
    ("body", "name", "expected"),
    [
        ("hi \u212aim", "kim", True),  # Kelvin sign: `re` matches it to k ignoring case
        ("ask \u0130van", "ivan", True),  # dotted capital I (lowers to two characters)
        ("ask \u0131van", "Ivan", True),  # dotless i
        ("\u017fam here", "sam", True),  # long s
        ("ÉLODIE?", "élodie", True),  # not ASCII: the regex alone decides
        ("kimberly", "kim", False),  # a substring, not a word
        ("k im", "kim", False),
    ],
)
def test_display_name_mention_matches_the_case_insensitive_regex(
    body: str, name: str, expected: bool
) -> None:
    """The substring check that skips the regex for most members never skips a match
    the case-insensitive regex would find (every character `re` folds to ASCII)."""
    cond = {"kind": "contains_display_name"}
    assert condition_matches(cond, msg(body), ctx(name=name)) is expected


def test_display_name_check_agrees_with_the_regex_on_every_lookalike() -> None:
    import re
    import string

    from homeserver.push.evaluator import (
        _display_name_regex,
        _mentions_display_name,
        glob_matches,
        glob_regex,
    )

    # Each character outside ASCII that `re` matches to an ASCII one, ignoring case.
    lookalikes = [
        chr(cp)
        for cp in range(0x80, 0x3000)
        if any(re.fullmatch(re.escape(a), chr(cp), re.I) for a in string.ascii_letters)
    ]
    assert lookalikes
    for ch in lookalikes:
        for name in ("kis", "Ik", "s", "ki s"):
            body = f"to {name.replace(name[0], ch, 1)} now"
            expected = _display_name_regex(name).search(body) is not None
            assert _mentions_display_name(name, body) is expected, (ch, name)
            # The same for a user-name rule's literal pattern.
            expected = glob_regex(name, True).search(body) is not None
            assert glob_matches(name, body, words=True) is expected, (ch, name)


# -- the default ruleset --------------------------------------------------------------


def actions_for(event: dict[str, Any], context: EvalContext | None = None, **overrides):
    ruleset = build_ruleset(ME, {}, {k: v for k, v in overrides.items()})
    rule = evaluate(ruleset.ordered, event, context or ctx())
    return (rule.rule_id, notify_and_highlight(rule.actions)) if rule else (None, (False, False))


def test_plain_message_in_group_notifies_without_highlight() -> None:
    assert actions_for(msg()) == (".m.rule.message", (True, False))


def test_one_to_one_room() -> None:
    assert actions_for(msg(), ctx(members=2)) == (".m.rule.room_one_to_one", (True, False))
    encrypted = {"type": "m.room.encrypted", "sender": "@o:x", "content": {}}
    assert actions_for(encrypted, ctx(members=2))[0] == ".m.rule.encrypted_room_one_to_one"
    assert actions_for(encrypted, ctx(members=3))[0] == ".m.rule.encrypted"


def test_user_mention_highlights() -> None:
    event = msg("hi", **{"m.mentions": {"user_ids": [ME]}})
    assert actions_for(event) == (".m.rule.is_user_mention", (True, True))
    other = msg("hi", **{"m.mentions": {"user_ids": ["@else:test.local"]}})
    assert actions_for(other) == (".m.rule.message", (True, False))


def test_room_mention_needs_permission() -> None:
    event = msg("@room", **{"m.mentions": {"room": True}})
    assert actions_for(event, ctx(sender_level=50)) == (".m.rule.is_room_mention", (True, True))
    assert actions_for(event, ctx(sender_level=0)) == (".m.rule.message", (True, False))
    assert actions_for(event, ctx(sender_level=10, room_level=10))[0] == ".m.rule.is_room_mention"


def test_edits_reactions_notices_members_do_not_notify() -> None:
    def edit(body: str, **extra: Any) -> dict[str, Any]:
        return msg(
            body,
            **{
                "m.new_content": {"body": body.lstrip("* "), "msgtype": "m.text"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"},
                **extra,
            },
        )

    # An edit names in m.mentions only whom it newly mentions: that user is notified...
    newly = edit("* hi me", **{"m.mentions": {"user_ids": [ME]}})
    assert actions_for(newly) == (".m.rule.is_user_mention", (True, True))
    # ... and any other edit is silent, even when its body holds my name (m.mentions
    # turns the legacy body rules off).
    assert actions_for(edit("* hi Me Myself", **{"m.mentions": {}}), ctx(name="Me Myself")) == (
        ".m.rule.suppress_edits",
        (False, False),
    )
    assert actions_for(edit("* typo fixed")) == (".m.rule.suppress_edits", (False, False))
    # An old client's edit (no m.mentions) with my name still matches the legacy rule.
    assert actions_for(edit("* hi Me Myself"), ctx(name="Me Myself"))[0] == (
        ".m.rule.contains_display_name"
    )
    reaction = {
        "type": "m.reaction",
        "sender": "@o:x",
        "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}},
    }
    assert actions_for(reaction) == (".m.rule.reaction", (False, False))
    assert actions_for(msg("beep", msgtype="m.notice"))[0] == ".m.rule.suppress_notices"
    join = {"type": "m.room.member", "state_key": "@o:x", "content": {"membership": "join"}}
    assert actions_for(join) == (".m.rule.member_event", (False, False))
    acl = {"type": "m.room.server_acl", "state_key": "", "content": {}}
    assert actions_for(acl) == (".m.rule.room.server_acl", (False, False))


def test_invite_for_me_and_tombstone_and_call() -> None:
    invite = {"type": "m.room.member", "state_key": ME, "content": {"membership": "invite"}}
    assert actions_for(invite) == (".m.rule.invite_for_me", (True, False))
    tomb = {"type": "m.room.tombstone", "state_key": "", "content": {"body": "moved"}}
    assert actions_for(tomb) == (".m.rule.tombstone", (True, True))
    call = {"type": "m.call.invite", "content": {}}
    assert actions_for(call) == (".m.rule.call", (True, False))
    assert actions_for({"type": "m.room.topic", "state_key": "", "content": {}})[0] is None


def test_master_rule_and_default_overrides() -> None:
    assert actions_for(msg(), **{".m.rule.master": DefaultOverride(enabled=True)})[0] == (
        ".m.rule.master"
    )
    quiet = {".m.rule.message": DefaultOverride(actions=())}
    assert actions_for(msg(), **quiet) == (".m.rule.message", (False, False))
    off = {".m.rule.message": DefaultOverride(enabled=False)}
    assert actions_for(msg(), **off) == (None, (False, False))


def test_default_rules_are_the_spec_v1_19_list() -> None:
    """Every predefined rule, in the spec's order, with its conditions and actions
    (client-server API, "Predefined rules"); Element warns about any that is missing."""
    notify_sound_highlight = [
        "notify",
        {"set_tweak": "sound", "value": "default"},
        {"set_tweak": "highlight"},
    ]

    def match(key: str, pattern: str) -> dict[str, Any]:
        return {"kind": "event_match", "key": key, "pattern": pattern}

    expected_override = [
        (".m.rule.master", False, [], []),
        (".m.rule.suppress_notices", True, [match("content.msgtype", "m.notice")], []),
        (
            ".m.rule.invite_for_me",
            True,
            [
                match("type", "m.room.member"),
                match("content.membership", "invite"),
                match("state_key", ME),
            ],
            ["notify", {"set_tweak": "sound", "value": "default"}],
        ),
        (".m.rule.member_event", True, [match("type", "m.room.member")], []),
        (
            ".m.rule.is_user_mention",
            True,
            [
                {
                    "kind": "event_property_contains",
                    "key": "content.m\\.mentions.user_ids",
                    "value": ME,
                }
            ],
            notify_sound_highlight,
        ),
        (
            ".m.rule.contains_display_name",
            True,
            [{"kind": "contains_display_name"}],
            notify_sound_highlight,
        ),
        (
            ".m.rule.is_room_mention",
            True,
            [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            ["notify", {"set_tweak": "highlight"}],
        ),
        (
            ".m.rule.roomnotif",
            True,
            [
                {"kind": "sender_notification_permission", "key": "room"},
                match("content.body", "@room"),
            ],
            ["notify", {"set_tweak": "highlight"}],
        ),
        (
            ".m.rule.tombstone",
            True,
            [match("type", "m.room.tombstone"), match("state_key", "")],
            ["notify", {"set_tweak": "highlight"}],
        ),
        (".m.rule.reaction", True, [match("type", "m.reaction")], []),
        (
            ".m.rule.room.server_acl",
            True,
            [match("type", "m.room.server_acl"), match("state_key", "")],
            [],
        ),
        (
            ".m.rule.suppress_edits",
            True,
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
    one_to_one = {"kind": "room_member_count", "is": "2"}
    expected_underride = [
        (
            ".m.rule.call",
            True,
            [match("type", "m.call.invite")],
            ["notify", {"set_tweak": "sound", "value": "ring"}],
        ),
        (
            ".m.rule.encrypted_room_one_to_one",
            True,
            [one_to_one, match("type", "m.room.encrypted")],
            ["notify", {"set_tweak": "sound", "value": "default"}],
        ),
        (
            ".m.rule.room_one_to_one",
            True,
            [one_to_one, match("type", "m.room.message")],
            ["notify", {"set_tweak": "sound", "value": "default"}],
        ),
        (".m.rule.message", True, [match("type", "m.room.message")], ["notify"]),
        (".m.rule.encrypted", True, [match("type", "m.room.encrypted")], ["notify"]),
    ]
    rules = default_rules(ME)
    for kind, expected in (("override", expected_override), ("underride", expected_underride)):
        assert [r.to_json() for r in rules[kind]] == [
            {"rule_id": rid, "default": True, "enabled": on, "actions": acts, "conditions": conds}
            for rid, on, conds, acts in expected
        ], kind
    assert [r.to_json() for r in rules["content"]] == [
        {
            "rule_id": ".m.rule.contains_user_name",
            "default": True,
            "enabled": True,
            "actions": notify_sound_highlight,
            "pattern": ME[1:].partition(":")[0],
        }
    ]
    assert rules["room"] == rules["sender"] == []


def test_shared_memo_across_recipients_keeps_per_user_outcomes() -> None:
    """One memo per event serves every recipient: shared conditions are evaluated once,
    but mentions of one user must not leak into another's result."""
    alice, bob = "@alice:test.local", "@bob:test.local"
    event = {
        "type": "m.room.message",
        "sender": "@carol:test.local",
        "room_id": "!r:test.local",
        "content": {"msgtype": "m.text", "body": "hi alice", "m.mentions": {"user_ids": [alice]}},
    }
    memo: dict = {}
    outcomes = {}
    for user in (alice, bob, alice):
        rules = build_ruleset(user, {}, {}).ordered
        shared = evaluate(rules, event, ctx(members=5), memo)
        alone = evaluate(rules, event, ctx(members=5))
        assert shared is not None and alone is not None
        assert shared.rule_id == alone.rule_id
        outcomes[user] = shared.rule_id
    assert outcomes[alice] == ".m.rule.is_user_mention"
    assert outcomes[bob] == ".m.rule.message"
    assert memo  # shared conditions were cached


def test_shared_memo_keeps_users_own_rules_apart() -> None:
    """Whole rules are memoised per event when no condition depends on the recipient:
    two users' own rules that differ only in a pattern, or only in being enabled, still
    give each user their own outcome, in either order."""
    from homeserver.push.rules import PushRule

    def muting(pattern: str, enabled: bool = True) -> PushRule:
        cond = {"kind": "event_match", "key": "content.body", "pattern": pattern}
        return PushRule("override", "mute", ("dont_notify",), (cond,), enabled=enabled)

    event = msg("lunch at noon")
    users = {
        "@a:test.local": muting("lunch*"),
        "@b:test.local": muting("dinner*"),
        "@c:test.local": muting("lunch*", enabled=False),
    }
    for order in (list(users), list(reversed(users))):
        memo: dict = {}
        got = {}
        for user in order:
            rules = build_ruleset(user, {"override": [users[user]]}, {}).ordered
            rule = evaluate(rules, event, ctx(members=5), memo)
            assert rule is not None
            got[user] = rule.rule_id
            assert got[user] == evaluate(rules, event, ctx(members=5)).rule_id  # type: ignore[union-attr]
        assert got == {
            "@a:test.local": "mute",
            "@b:test.local": ".m.rule.message",
            "@c:test.local": ".m.rule.message",
        }


def test_display_name_is_asked_for_only_when_a_rule_reaches_it() -> None:
    """A context without the recipient's name (looking it up reads every member of the
    room) serves every event whose rules decide before a display-name condition; one
    that gets that far raises DisplayNameNeeded, and with the name the answer is as if
    the name had been known from the start."""
    from dataclasses import replace

    from homeserver.push.evaluator import DisplayNameNeeded

    rules = build_ruleset(ME, {}, {}).ordered
    unknown = replace(ctx(members=5), display_name_known=False)
    join = {
        "type": "m.room.member",
        "state_key": "@x:test.local",
        "content": {"membership": "join"},
    }
    assert evaluate(rules, join, unknown).rule_id == ".m.rule.member_event"  # type: ignore[union-attr]
    with_mentions = msg("hey Mimi", **{"m.mentions": {}})
    assert evaluate(rules, with_mentions, unknown).rule_id == ".m.rule.message"  # type: ignore[union-attr]
    legacy = msg("hey Mimi")
    with pytest.raises(DisplayNameNeeded):
        evaluate(rules, legacy, unknown, {})
    named = replace(unknown, display_name="mimi", display_name_known=True)
    rule = evaluate(rules, legacy, named, {})
    assert rule is not None and rule.rule_id == ".m.rule.contains_display_name"
    assert notify_and_highlight(rule.actions) == (True, True)


def test_planned_evaluation_agrees_with_evaluating_every_rule() -> None:
    """evaluate_ruleset (one plan per event and ruleset signature, shared by every
    recipient) gives each recipient the rule that walking all their rules gives,
    whatever mix of rulesets and order of recipients shares the memo."""
    import random
    from dataclasses import replace

    from homeserver.push.evaluator import DisplayNameNeeded, evaluate_ruleset
    from homeserver.push.rules import PushRule

    users = [f"@u{i}:test.local" for i in range(12)]
    names = {u: f"Name{i}" for i, u in enumerate(users)}

    def ruleset(i: int, user: str):
        own: dict[str, list[PushRule]] = {}
        changes: dict[str, DefaultOverride] = {}
        if i % 4 == 1:  # mutes one room
            own["room"] = [PushRule("room", "!r:test.local", (), (), default=False)]
        if i % 4 == 2:  # notices notify; mentions do not
            changes[".m.rule.suppress_notices"] = DefaultOverride(enabled=False)
            changes[".m.rule.is_user_mention"] = DefaultOverride(enabled=False)
        if i % 4 == 3:  # the master rule on
            changes[".m.rule.master"] = DefaultOverride(enabled=True)
        return build_ruleset(user, own, changes)

    rulesets = {u: ruleset(i, u) for i, u in enumerate(users)}
    member = {"type": "m.room.member", "room_id": "!r:test.local", "sender": users[0]}
    events = [
        msg("hello"),
        msg("hey Name3 and u5", **{"m.mentions": {}}),
        msg("hey Name3 and u5"),
        msg("@room now", **{"m.mentions": {"room": True}}),
        msg("psst", **{"m.mentions": {"user_ids": [users[4], users[6]]}}),
        msg("a notice", msgtype="m.notice"),
        {**member, "state_key": users[7], "content": {"membership": "invite"}},
        {**member, "state_key": users[8], "content": {"membership": "join"}},
        {"type": "m.room.encrypted", "room_id": "!r:test.local", "content": {}},
        {"type": "m.room.message", "room_id": "!other:test.local", "content": {"body": "x"}},
    ]
    rng = random.Random(7)
    for event in events:
        for members in (2, 30):
            order = users[:]
            rng.shuffle(order)
            memo: dict = {}
            for user in order:
                rs = rulesets[user]
                named = replace(ctx(members=members), display_name=names[user])
                unknown = replace(named, display_name=None, display_name_known=False)
                try:
                    planned = evaluate_ruleset(rs, event, unknown, memo)
                except DisplayNameNeeded:
                    planned = evaluate_ruleset(rs, event, named, memo)
                alone = evaluate(rs.ordered, event, named)
                assert planned is alone, (event, user, planned, alone)
    assert len({rs.signature for rs in rulesets.values()}) == 4
