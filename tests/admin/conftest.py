"""Fixtures for the Synapse admin API tests: the full app, a server admin and a user."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.appstate import STORES
from homeserver.config import Config
from tests.client.helpers import auth, make_user

ADMIN = "/_synapse/admin"


@dataclass
class AdminEnv:
    client: TestClient
    admin_id: str
    admin_token: str
    user_id: str
    user_token: str

    @property
    def admin(self) -> dict[str, str]:
        return auth(self.admin_token)

    @property
    def user(self) -> dict[str, str]:
        return auth(self.user_token)

    async def call(
        self, method: str, path: str, *, token: str | None = "admin", **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {}
        if token == "admin":
            headers = self.admin
        elif token == "user":
            headers = self.user
        elif token is not None:
            headers = auth(token)
        response = await self.client.request(method, ADMIN + path, headers=headers, **kwargs)
        text = await response.text()
        try:
            body = await response.json(content_type=None) if text else None
        except ValueError:
            body = text
        return response.status, body


async def make_env(client: TestClient) -> AdminEnv:
    admin_id, admin_token, _ = await make_user(client, "admin", "ADMINDEV")
    await client.server.app[STORES].accounts.set_admin(admin_id, True)
    user_id, user_token, _ = await make_user(client, "bob", "BOBDEV")
    return AdminEnv(client, admin_id, admin_token, user_id, user_token)


@pytest.fixture
async def env(aiohttp_client: Any, tmp_config: Callable[..., Config]) -> AdminEnv:
    return await make_env(await aiohttp_client(create_app(tmp_config())))


@pytest.fixture
def make_admin_env(aiohttp_client: Any, tmp_config: Callable[..., Config]) -> Any:
    """`await make_admin_env(**config_overrides)` for tests that need their own config."""

    async def factory(**overrides: Any) -> AdminEnv:
        return await make_env(await aiohttp_client(create_app(tmp_config(**overrides))))

    return factory
