"""Fixtures shared by the client tests beyond tests/conftest.py."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.client.appservice_kit import bridge

__all__ = ["bridge"]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for tests that talk to a real deployment (test_workers*)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s
