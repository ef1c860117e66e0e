"""Federation test fixtures: our own servers federating on loopback.

`loopback(label, **config)` starts a `LoopbackServer` (tests/federation/multiserver.py);
every server a test started is stopped at teardown, in reverse order, also when the test
or a later start failed. `pair` is the common case: servers "a" and "b".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.federation.multiserver import LoopbackServer

StartServer = Callable[..., Awaitable[LoopbackServer]]


@pytest.fixture
async def loopback(tmp_path: Path) -> AsyncIterator[StartServer]:
    started: list[LoopbackServer] = []

    async def start(label: str, **overrides: Any) -> LoopbackServer:
        server = LoopbackServer(tmp_path, label, **overrides)
        started.append(server)  # before start(): close() also frees its HTTP session
        await server.start()
        return server

    try:
        yield start
    finally:
        failures: list[BaseException] = []
        for server in reversed(started):
            try:
                await server.close()
            except Exception as e:  # stop the others, then report the first failure
                failures.append(e)
        if failures:
            raise failures[0]


@pytest.fixture
async def pair(loopback: StartServer) -> tuple[LoopbackServer, LoopbackServer]:
    """Two of our servers, "a" and "b", federating with each other."""
    return await loopback("a"), await loopback("b")
