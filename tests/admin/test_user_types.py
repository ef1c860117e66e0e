"""Synapse's user_types: the type new accounts get (default_user_type) and the types
beyond bot and support the admin API may set (extra_user_types)."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.config import ConfigError
from tests.client.helpers import register_user

SETTINGS = {"default_user_type": "staff", "extra_user_types": ["staff", "contractor"]}


async def test_new_accounts_get_the_default_and_extra_types_are_allowed(
    make_admin_env: Any,
) -> None:
    env = await make_admin_env(user_types=SETTINGS)
    newcomer = await register_user(env.client, "newcomer")
    status, body = await env.call("GET", f"/v2/users/{newcomer['user_id']}")
    assert (status, body["user_type"]) == (200, "staff")
    status, body = await env.call(
        "PUT", f"/v2/users/{newcomer['user_id']}", json={"user_type": "contractor"}
    )
    assert (status, body["user_type"]) == (200, "contractor")
    status, body = await env.call(
        "PUT", f"/v2/users/{newcomer['user_id']}", json={"user_type": "x"}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_without_user_types_new_accounts_have_none(make_admin_env: Any) -> None:
    env = await make_admin_env()
    newcomer = await register_user(env.client, "plain")
    status, body = await env.call("GET", f"/v2/users/{newcomer['user_id']}")
    assert (status, body["user_type"]) == (200, None)
    status, body = await env.call(
        "PUT", f"/v2/users/{newcomer['user_id']}", json={"user_type": "contractor"}
    )
    assert status == 400


def test_the_default_must_be_a_known_type(tmp_config: Any) -> None:
    with pytest.raises(ConfigError, match="user_types.default_user_type"):
        tmp_config(user_types={"default_user_type": "wizard"})
