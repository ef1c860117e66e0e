"""The client tests against the worker deployment (issue 16): `HS_TEST_DEPLOYMENT=workers`.

In this mode every in-process server a test asks for (`aiohttp_client(create_app(
config))`, the `app_client` fixture) is instead a real deployment started for that test
(tests/deployment.py FULL_LAYOUT: PostgreSQL, Redis, the main, two client readers, a
federation inbound worker, a federation sender, two event persisters, nginx), configured with the
test's own settings; the test's client talks HTTP to nginx. A test that reaches into
the server's memory (`client.app[...]`) is skipped here, saying so: it checks
something no deployment exposes.

    HS_TEST_DEPLOYMENT=workers HS_TEST_POSTGRES_DSN=... python -m pytest tests/client

(`HS_TEST_DEPLOYMENT=writers`: the same, with the client readers writing account data,
to-device messages, receipts, push rules, device lists and typing themselves, and the first also presence.)

It costs a deployment start per test (about 3 s on two cores), so CI runs the tests
that matter most against the deployment directly (the nio conversation, the Synapse
interop run, the durability test) and this mode on demand.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer
from yarl import URL

from homeserver.config.workers import READER_STREAMS, SINGLE_WRITER_STREAMS

MODE = os.environ.get("HS_TEST_DEPLOYMENT", "")
# `HS_TEST_DEPLOYMENT=writers`: the same deployment with both client readers writing
# every stream a reader may write (account data, to-device messages, receipts, push
# rules, device lists, typing), so the suites run with those writes served by them.
# Presence has one writer (SINGLE_WRITER_STREAMS): the first reader.
READER_WRITERS = {
    stream: ["client_reader1"]
    if stream in SINGLE_WRITER_STREAMS
    else ["client_reader1", "client_reader2"]
    for stream in READER_STREAMS
}

# The raw settings each test config was parsed from (tests/conftest.make_config), by
# the Config object's id; the Config is kept alive alongside so ids are not reused.
_RAW: dict[int, tuple[Any, dict[str, Any]]] = {}

# Settings that describe the in-process server's files and sockets: the deployment has
# its own.
_LOCAL_KEYS = frozenset(
    {"listeners", "database", "signing_key_path", "media_store_path", "log_level", "server_name"}
)


def remember(config: Any, raw: dict[str, Any]) -> None:
    if MODE:
        _RAW[id(config)] = (config, dict(raw))


def deployment_settings(config: Any) -> dict[str, Any]:
    """The test's settings a deployment takes from `config` (all but its own files and
    sockets)."""
    return settings_for_deployment(_RAW.get(id(config), (None, {}))[1])


def settings_for_deployment(raw: dict[str, Any]) -> dict[str, Any]:
    """Test settings (tests/conftest.config_settings) as a deployment's overrides; in
    `HS_TEST_DEPLOYMENT=writers` mode, both client readers also write the streams a
    reader may write (READER_WRITERS)."""
    settings = {k: v for k, v in raw.items() if k not in _LOCAL_KEYS}
    if MODE == "writers":
        settings["stream_writers"] = {**READER_WRITERS, **settings.get("stream_writers", {})}
    return settings


class DeploymentServer(BaseTestServer):
    """What an aiohttp TestClient talks to: the deployment's nginx."""

    def __init__(
        self,
        config: Any,
        settings: dict[str, Any] | None = None,
        *,
        restart_of: DeploymentServer | None = None,
        **layout: Any,
    ) -> None:
        """`settings`: deployment settings beside the test config's (which SQLite
        would refuse: `stream_writers`...); `layout`: Deployment's role counts instead
        of FULL_LAYOUT's; `restart_of`: a closed server whose deployment this one
        starts again, on its data (the test restarting its server)."""
        super().__init__()
        from tests.deployment import FULL_LAYOUT, Deployment, missing_parts

        why = missing_parts()
        if why is not None:
            pytest.skip(f"HS_TEST_DEPLOYMENT needs a worker deployment: {why}")
        self.overrides = {**deployment_settings(config), **(settings or {})}
        self.config = config
        self.view: Any = None
        self._discard_on_close = False
        if restart_of is not None:
            self.tokens: dict[str, str] = restart_of.tokens  # (helpers.make_user)
            self._workdir = restart_of._workdir
            self.deployment = restart_of.deployment
            return
        self.tokens = {}
        self._workdir = tempfile.TemporaryDirectory(prefix="hs-deployment-")
        self.deployment = Deployment(
            Path(self._workdir.name),
            **(layout or FULL_LAYOUT),
            server_name=config.server_name,
            overrides=self.overrides,
        )

    async def _make_runner(self, **kwargs: Any) -> Any:
        raise NotImplementedError("a deployment runs in its own processes")

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        if self._root is None:
            await asyncio.to_thread(self.deployment.start)
            self._root = URL(self.deployment.url)
            self.host, self.port = "127.0.0.1", self.deployment.nginx_port
            from tests.deployment_view import DeploymentView

            self.view = DeploymentView(self.deployment, self.config, self.tokens)
            await self.view.open()

    @property
    def app(self) -> Any:
        if self.view is None:
            pytest.skip("reads the server's memory before the deployment started")
        return self.view

    async def close(self) -> None:
        """Stop the deployment, keeping its data for a restart within the test
        (`discard` drops it when the test ends)."""
        if not self._closed:
            self._closed = True
            if self.view is not None:
                await self.view.close()
            if self._discard_on_close:
                await asyncio.to_thread(self._discard_now)
            else:
                await asyncio.to_thread(self.deployment.stop, keep_data=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def discard(self) -> None:
        """The test is over: drop the deployment's data and files, now if it is
        closed, else once it is (its client is closed after this fixture ends)."""
        if self._closed:
            self._discard_now()
        else:
            self._discard_on_close = True

    def _discard_now(self) -> None:
        self.deployment.stop()
        self._workdir.cleanup()


@pytest.fixture
def aiohttp_client(aiohttp_client: Any) -> Iterator[Any]:
    """pytest-aiohttp's factory, with an Application replaced by its deployment."""
    if not MODE:
        yield aiohttp_client
        return
    from homeserver.appstate import CONFIG, SUBSTITUTED

    # This test's deployments by the server they run (its signing key file): a second
    # create_app of the same server is a restart on its data, as in process.
    started: dict[str, DeploymentServer] = {}
    every: list[DeploymentServer] = []  # each deployment's latest server

    async def go(param: Any, **kwargs: Any) -> Any:
        if isinstance(param, web.Application):
            if param[SUBSTITUTED]:
                pytest.skip("gives create_app a test's substitutes, which a deployment lacks")
            config = param[CONFIG]
            if _RAW.get(id(config), (None, {}))[1].get("listeners") != _default_listeners():
                pytest.skip("sets its own listeners; a deployment's are the README's")
            # A server's data is where its signing key is (tmp_config() called again
            # gives a new Config for the same files).
            identity = str(config.keys.signing_key_path)
            before = started.get(identity)
            if before is None or not before.closed:
                # (A second server while the first runs: a test comparing two configs,
                # in process on the same files; here each is a deployment of its own.)
                param = DeploymentServer(config)
                every.append(param)
            else:
                param = DeploymentServer(config, restart_of=before)
                every[every.index(before)] = param  # the one that ends the deployment
                if param.overrides != before.overrides:  # restarted with other settings
                    param.deployment.reconfigure(param.overrides)
            started[identity] = param
        return await aiohttp_client(param, **kwargs)

    try:
        yield go
    finally:
        # (Before pytest-aiohttp closes its clients: those still open drop theirs then.)
        for server in every:
            server.discard()


def _default_listeners() -> Any:
    from tests.conftest import config_settings

    return config_settings()["listeners"]
