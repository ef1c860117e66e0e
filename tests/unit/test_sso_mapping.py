"""The pure part of single sign-on (homeserver/accounts/sso_mapping.py): templates
and the localpart an identity provider's username becomes."""

from __future__ import annotations

from homeserver.accounts.sso_mapping import render, to_localpart


def test_templates_take_claims_and_filters() -> None:
    claims = {"preferred_username": "Alice", "email": "Alice.B@Example.org", "groups": ["a"]}
    assert render("{{ user.preferred_username }}", claims) == "Alice"
    assert render("{{user.preferred_username|lower}}", claims) == "alice"
    assert render("{{ user.email | localpart_from_email }}", claims) == "Alice.B"
    assert render("x-{{ user.missing }}", claims) == "x-"
    assert render("{{ user.groups }}", claims) == ""  # no lists or objects in names


def test_usernames_become_localparts() -> None:
    assert to_localpart("Alice") == "alice"
    assert to_localpart("bob smith") == "bob=20smith"
    assert to_localpart("zoë") == "zo=c3=ab"
    assert to_localpart("") is None
