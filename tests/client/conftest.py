"""Fixtures shared by the client tests beyond tests/conftest.py."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.client.appservice_kit import bridge
from tests.mail_sink import MailSink

__all__ = ["bridge"]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for tests that talk to a real deployment (test_workers*)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    """A real SMTP server on loopback keeping what the homeserver mails (test_email_*)."""
    mail = MailSink().start()
    try:
        yield mail
    finally:
        mail.stop()
