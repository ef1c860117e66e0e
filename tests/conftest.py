"""Shared fixtures: a test Config factory and an in-process client for the whole app.

Kept lean on purpose; area-specific helpers belong in that area's tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.app import create_app
from homeserver.config import Config, parse_config
from tests import deployment_mode

# pytest-aiohttp's client factory, which HS_TEST_DEPLOYMENT points at a deployment.
aiohttp_client = deployment_mode.aiohttp_client

TEST_SERVER_NAME = "test.local"
TEST_SHARED_SECRET = "test-registration-shared-secret"


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """A Config for tests: test.local, SQLite in tmp_path, rate limits off, registration on.

    `overrides` are top-level YAML keys (e.g. `enable_registration=False`) and go
    through the real parser, so tests exercise the same checks as a config file.
    """
    raw = config_settings(**overrides)
    config = parse_config(raw, base_dir=tmp_path, source="test config")
    deployment_mode.remember(config, raw)
    return config


def config_settings(**overrides: Any) -> dict[str, Any]:
    """The settings make_config parses (a YAML document's top level)."""
    raw: dict[str, Any] = {
        "server_name": TEST_SERVER_NAME,
        "listeners": [
            {"port": 0, "resources": [{"names": ["client", "federation", "keys", "media"]}]}
        ],
        "database": {"name": "sqlite3", "args": {"database": "homeserver.db"}},
        "signing_key_path": f"{TEST_SERVER_NAME}.signing.key",
        "media_store_path": "media_store",
        "rc_enabled": False,
        # Any user may publish rooms (the default: server admins only).
        "room_list_publication_rules": [{"action": "allow"}],
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "registration_shared_secret": TEST_SHARED_SECRET,
        "macaroon_secret_key": "test-macaroon-secret",
        "form_secret": "test-form-secret",
        # Cheapest argon2id cost: tests register many users (production keeps the default).
        "password_hashing": {"opslimit": 1, "memlimit": 8192},
        "log_level": "DEBUG",
    }
    raw.update(overrides)
    return raw


@pytest.fixture
def tmp_config(tmp_path: Path) -> Callable[..., Config]:
    """`tmp_config(**overrides) -> Config` with its files under this test's tmp_path."""

    def factory(**overrides: Any) -> Config:
        return make_config(tmp_path, **overrides)

    return factory


@pytest.fixture
async def app_client(aiohttp_client: Any, tmp_config: Callable[..., Config]) -> TestClient:
    """The full app (create_app) on a test server, with the default test config."""
    return await aiohttp_client(create_app(tmp_config()))


@pytest.fixture(params=["sqlite", "postgres"])
async def database_settings(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Config settings for each backend, for a test that must hold on both: PostgreSQL
    refuses what SQLite stores (U+0000 in text), which once made an abuse report with a
    NUL in its reason answer 500 there only. Take it before the client fixture, so the
    schema is dropped after the app has stopped."""
    if request.param == "sqlite":
        yield {}
        return
    from tests.storage.conftest import (
        POSTGRES_SKIP_REASON,
        drop_postgres_schema,
        postgres_test_config,
    )

    if deployment_mode.MODE:
        pytest.skip("a deployment runs on PostgreSQL already")
    db = postgres_test_config()
    if db is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    try:
        yield {"database": db}
    finally:
        await drop_postgres_schema(db)
