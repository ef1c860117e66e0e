"""What `client.app[...]` gives a test in deployment mode (tests/deployment_mode.py).

A deployment's processes share nothing with the test process but PostgreSQL and their
files, so a test that reads the server's stores reads that database, as every worker
does; a test that has the server send a local event or create a room has the user do
it through the client API (as that user, with an access token written to the
database); the signing keys are read from the key file the processes share. Anything
else a test takes from the application (a service, a cache, a queue) lives in some
process's memory: the test is skipped, saying so.

What the database view cannot show: writes the test makes through it skip every
process's caches and the stream positions Redis carries, so a test that seeds data the
server must notice at once (rather than read on its first miss) fails here; those are
listed by the run, not hidden.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import aiohttp
import pytest
import yaml

from federation.appkeys import SERVER_KEYS
from homeserver.appstate import (
    ACCOUNT_AUTH_STORE,
    ADMIN_JOBS,
    E2EE_KEY_STORE,
    LOCAL_EVENTS,
    MEMBERSHIP,
    PUSH_STORE,
    ROOM_CREATOR,
    ROOM_READ_STORE,
    STORES,
)
from homeserver.errors import MatrixError
from homeserver.events import Event
from homeserver.storage.cache import LruCache
from homeserver.storage.stores import Stores


class DeploymentView:
    """The parts of an application a test may use against a deployment."""

    def __init__(
        self, deployment: Any, config: Any, user_tokens: dict[str, str] | None = None
    ) -> None:
        self._deployment = deployment
        self._config = config
        # The first access token the test helpers gave each user (helpers.make_user):
        # nginx keeps a token's requests on one client reader, so the view acting "as
        # the user" with that token reads its own writes there, as the in-process
        # services do (its own token could land on a reader the write has not reached).
        self._user_tokens = user_tokens if user_tokens is not None else {}
        self._routes: Any = None
        self._stores: Stores | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, str] = {}

    async def open(self) -> None:
        from homeserver.storage.database import open_database
        from homeserver.storage.stores import open_stores

        args = {"dsn": self._deployment.app_dsn, "schema": self._deployment.schema}
        db = await open_database(
            {"name": "psycopg2", "args": {**args, "cp_min": 1, "cp_max": 2}}, migrate=False
        )
        self._stores = await open_stores(db)
        _forget_everything(self._stores)
        self._session = aiohttp.ClientSession(self._deployment.url)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._stores is not None:
            await self._stores.db.close()

    @property
    def router(self) -> Any:
        """The routes the deployment serves: an application built from the same
        config in this process, never started (for the tests that enumerate routes and
        send each one hostile input through nginx)."""
        if self._routes is None:
            from homeserver.app import create_app

            self._routes = create_app(self._config).router
        return self._routes

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        _skip(f"client.app.{name}")

    def __getitem__(self, key: Any) -> Any:
        if key is STORES and self._stores is not None:
            return self._stores
        if key is LOCAL_EVENTS:
            return _LocalEvents(self)
        if key is ROOM_CREATOR:
            return _RoomCreator(self)
        if key is MEMBERSHIP:
            return _Membership(self)
        if key is ADMIN_JOBS and self._stores is not None:
            return _AdminJobs(self._stores.db)
        if key in _DATABASE_ONLY and self._stores is not None:
            return _uncached(_DATABASE_ONLY[key](self._stores.db))
        if key is SERVER_KEYS:
            return self._server_keys()
        _skip(f"client.app[{getattr(key, '_name', key)}]")

    def _server_keys(self) -> Any:
        """The deployment's signing keys, from the key file its processes share (what
        the test's config says about old keys and refresh went into the deployment's
        settings as well)."""
        from federation.keys import ServerKeys, read_key_file

        workdir = Path(self._deployment.workdir)
        main = yaml.safe_load((workdir / "homeserver.yaml").read_text())
        path = workdir / main["signing_key_path"]  # an absolute path stays itself
        return ServerKeys(
            server_name=self._config.server_name,
            signing_keys=tuple(read_key_file(path)),
            old_verify_keys=self._config.keys.old_signing_keys,
            refresh_interval_ms=self._config.keys.key_refresh_interval_ms,
        )

    async def token_for(self, user_id: str, device_id: str | None = None) -> str:
        """An access token for a local user (created if missing), of one of its
        devices or none, written to the database as /login would; the processes read
        it on their first sight of it."""
        if device_id is None and user_id in self._user_tokens:
            return self._user_tokens[user_id]
        key = f"{user_id}|{device_id or ''}"
        if key not in self._tokens:
            assert self._stores is not None
            if await self._stores.accounts.get_user(user_id) is None:
                await self._stores.accounts.create_user(user_id, None)
            token = f"view_{secrets.token_urlsafe(16)}"
            await self._stores.accounts.add_access_token(token, user_id, device_id)
            self._tokens[key] = token
        return self._tokens[key]

    async def request_as(
        self, user_id: str, method: str, path: str, body: Any, device_id: str | None = None
    ) -> Any:
        """A client API request as `user_id` (from `device_id`); a Matrix error raises
        MatrixError as the in-process service would."""
        assert self._session is not None
        headers = {"Authorization": f"Bearer {await self.token_for(user_id, device_id)}"}
        async with self._session.request(method, path, json=body, headers=headers) as resp:
            payload = await resp.json()
        if resp.status != 200:
            raise MatrixError(resp.status, payload.get("errcode", "M_UNKNOWN"), payload["error"])
        return payload

    async def membership_event(self, room_id: str, user_id: str) -> Event:
        """The user's current membership event in the room (as the database has it)."""
        assert self._stores is not None
        event_id = await self._stores.db.fetchval(
            "SELECT event_id FROM current_state WHERE room_id = $1"
            " AND type = 'm.room.member' AND state_key = $2",
            room_id,
            user_id,
        )
        assert event_id is not None, (room_id, user_id)
        return await self.event(event_id)

    async def event(self, event_id: str) -> Event:
        assert self._stores is not None
        event = await self._stores.events.get_event(event_id)
        assert event is not None, event_id
        return event


def _database_only() -> dict[Any, Any]:
    """Stores whose every answer is in the database: the view gives a test its own,
    over the deployment's PostgreSQL, with nothing cached."""
    from homeserver.storage.account_auth import AccountAuthStore
    from homeserver.storage.e2ee_keys import E2eeKeyStore
    from homeserver.storage.push import PushStore
    from homeserver.storage.room_directory import RoomReadStore

    return {
        PUSH_STORE: PushStore,
        ACCOUNT_AUTH_STORE: AccountAuthStore,
        ROOM_READ_STORE: RoomReadStore,
        E2EE_KEY_STORE: E2eeKeyStore,
    }


_DATABASE_ONLY = _database_only()


def _uncached(store: Any) -> Any:
    for value in vars(store).values():
        if isinstance(value, LruCache):
            value.max_size = 0
    return store


def _skip(what: str) -> NoReturn:
    pytest.skip(f"reads the server's memory ({what}), which a deployment does not share")


def _forget_everything(stores: Stores) -> None:
    """Size every cache of the view's stores to nothing: the deployment's processes write
    the database without telling the test process, so whatever it remembered (a room's
    forward extremities, a membership) would be stale by the next read."""
    for name in stores.__dataclass_fields__:
        store = getattr(stores, name)
        if hasattr(store, "__dict__"):
            _uncached(store)


class _LocalEvents:
    """homeserver.rooms.local_events.LocalEvents.send, as the sender's client sends."""

    def __init__(self, view: DeploymentView) -> None:
        self._view = view

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        redacts: str | None = None,
        txn: Any = None,
        ts: int | None = None,
    ) -> Event:
        if ts is not None:
            pytest.skip("sends with a timestamp the client API takes from appservices only")
        device_id: str | None = None
        txn_id = secrets.token_hex(8)
        if txn is not None:  # (user, device, txn ID): that device's client sends it
            if txn[0] != sender or redacts is not None or state_key is not None:
                pytest.skip("sends with a transaction the client API does not offer")
            device_id, txn_id = txn[1], txn[2]
        room = quote(room_id, safe="")
        if redacts is not None:
            path = f"/rooms/{room}/redact/{quote(redacts, safe='')}/{txn_id}"
        elif state_key is not None:
            path = f"/rooms/{room}/state/{quote(event_type, safe='')}/{quote(state_key, safe='')}"
        else:
            path = f"/rooms/{room}/send/{quote(event_type, safe='')}/{txn_id}"
        body = await self._view.request_as(
            sender, "PUT", f"/_matrix/client/v3{path}", content, device_id
        )
        return await self._view.event(body["event_id"])


class _Membership:
    """homeserver.rooms.membership.MembershipService's join and set_membership, as
    the sender's client asks."""

    def __init__(self, view: DeploymentView) -> None:
        self._view = view

    async def join(self, room_id: str, user_id: str) -> Event:
        room = quote(room_id, safe="")
        body = await self._view.request_as(user_id, "POST", f"/_matrix/client/v3/join/{room}", {})
        return await self._view.membership_event(body["room_id"], user_id)

    async def set_membership(
        self,
        room_id: str,
        sender: str,
        target: str,
        membership: str,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Event:
        if extra:
            pytest.skip("sets membership content the client API does not offer")
        if membership == "leave":
            verb = "leave" if sender == target else "kick"
        else:
            verb = {"invite": "invite", "ban": "ban"}[membership]
        body: dict[str, Any] = {} if verb == "leave" else {"user_id": target}
        if reason is not None:
            body["reason"] = reason
        room = quote(room_id, safe="")
        await self._view.request_as(sender, "POST", f"/_matrix/client/v3/rooms/{room}/{verb}", body)
        return await self._view.membership_event(room_id, target)


class _AdminJobs:
    """homeserver.admin.jobs.JobRunner.wait_idle: the main runs the admin API's jobs
    and records each one's status in the database."""

    def __init__(self, db: Any) -> None:
        self._db = db

    async def wait_idle(self, timeout_s: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await self._db.fetchval(
            "SELECT count(*) FROM admin_jobs WHERE status IN ('scheduled', 'active')"
        ):
            assert asyncio.get_running_loop().time() < deadline, "admin jobs still running"
            await asyncio.sleep(0.05)


class _RoomCreator:
    """homeserver.rooms.creation.RoomCreator.create_room, as the creator's client asks."""

    def __init__(self, view: DeploymentView) -> None:
        self._view = view

    async def create_room(self, creator: str, spec: Any, member_content: dict[str, Any]) -> str:
        if member_content or spec.room_id is not None:
            pytest.skip("creates a room in a way /createRoom does not offer")
        body: dict[str, Any] = {
            "room_version": spec.room_version,
            "preset": spec.preset,
            "visibility": spec.visibility,
            "invite": spec.invite,
            "is_direct": spec.is_direct,
            "creation_content": spec.creation_content,
            "initial_state": spec.initial_state,
        }
        for key, value in (
            ("name", spec.name),
            ("topic", spec.topic),
            ("power_level_content_override", spec.power_level_content_override),
        ):
            if value is not None:
                body[key] = value
        if spec.alias is not None:
            body["room_alias_name"] = spec.alias[1:].split(":", 1)[0]
        payload = await self._view.request_as(
            creator, "POST", "/_matrix/client/v3/createRoom", body
        )
        return str(payload["room_id"])
