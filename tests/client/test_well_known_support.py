"""/.well-known/matrix/support: the configured contacts and support page, or the
spec's 404 M_NOT_FOUND; the `support` config section is checked when loading."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.config import ConfigError

PATH = "/.well-known/matrix/support"


async def test_not_configured_is_404_not_found(aiohttp_client: Any, tmp_config) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    response = await client.get(PATH)
    assert response.status == 404
    assert (await response.json())["errcode"] == "M_NOT_FOUND"


async def test_configured_contacts_and_page(aiohttp_client: Any, tmp_config) -> None:
    support = {
        "contacts": [
            {
                "role": "m.role.admin",
                "matrix_id": "@admin:test.local",
                "email_address": "admin@test.local",
            },
            {"role": "m.role.security", "email_address": "security@test.local"},
            {"role": "org.example.moderator", "matrix_id": "@mod:elsewhere.org"},
        ],
        "support_page": "https://test.local/help.html",
    }
    client = await aiohttp_client(create_app(tmp_config(support=support)))
    response = await client.get(PATH)
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert await response.json() == support


async def test_page_only(aiohttp_client: Any, tmp_config) -> None:
    config = tmp_config(support={"support_page": "https://test.local/help"})
    client = await aiohttp_client(create_app(config))
    assert await (await client.get(PATH)).json() == {"support_page": "https://test.local/help"}


@pytest.mark.parametrize(
    ("support", "problem"),
    [
        ({}, "support: set support_page or at least one contact"),
        ({"contacts": [{"role": "m.role.admin"}]}, "needs a matrix_id or an email_address"),
        ({"contacts": [{"matrix_id": "@a:b.c"}]}, "support.contacts[0].role: required"),
        ({"contacts": [{"role": "m.role.boss", "matrix_id": "@a:b.c"}]}, "role: required"),
        ({"contacts": [{"role": "m.role.admin", "matrix_id": "admin"}]}, "expected a user ID"),
        ({"contacts": [{"role": "m.role.admin", "email_address": "x"}]}, "an email address"),
        ({"support_page": "ftp://x"}, "support.support_page: expected an http(s) URL"),
        ({"support_page": "https://x", "extra": 1}, "support.extra: unknown key"),
        ("yes", "support: expected a mapping"),
    ],
)
def test_bad_support_section_is_reported(tmp_config, support: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        tmp_config(support=support)
    assert any(problem in p for p in info.value.problems), info.value.problems
