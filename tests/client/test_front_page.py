"""The server's root: web_client_location (Synapse's key) sends a browser to the web
client; without it, to a page saying this is a Matrix homeserver."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.config import ConfigError


async def test_the_root_sends_browsers_to_the_web_client(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    config = tmp_config(web_client_location="https://chat.example.org/")
    client = await aiohttp_client(create_app(config))
    resp = await client.get("/", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "https://chat.example.org/")


async def test_without_one_the_root_says_what_this_is(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    resp = await client.get("/")  # followed to /_matrix/static/
    text = await resp.text()
    assert resp.status == 200 and resp.url.path == "/_matrix/static/"
    assert "It works!" in text and "test.local" in text
    assert resp.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "chat.example.org", "https://a\nb"])
def test_only_web_addresses_are_accepted(tmp_config: Any, bad: str) -> None:
    with pytest.raises(ConfigError, match="web_client_location"):
        tmp_config(web_client_location=bad)
