"""Requests between processes: a worker serves reads and hands everything else to main.

The worker side (`worker_middleware`): requests matching READ_ROUTES are served here
from PostgreSQL and this process's replicated caches; every other request (sends,
state changes, uploads, logins, admin...) is forwarded verbatim to the main process's
`replication` listener, with the shared secret and the client's address. The main
answers with the stream token its notifier had once the request finished
(X-Replication-Token); the worker waits until it has itself caught up with the
persisted streams in that token before answering, so a client that sends through one
process and syncs on another still sees its own message at once.

The main side (`replication_middleware`): a listener with the `replication` resource
accepts only requests carrying the secret (compared in constant time) and then serves
every resource; it never faces the public network (the nginx config routes nothing to
it). Also here: `/_replication/presence`, where the other processes report syncs,
actions, presence changes and other servers' presence updates to the presence writer
(the main, or the worker named `stream_writers: {presence: [...]}`), which owns the
timers.

Bounds: one connection pool to the main (FORWARD_CONNECTIONS), a request body the size
the public listener already accepts, FORWARD_TIMEOUT_S per forwarded request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from homeserver.delayed.service import DELAY_PARAM
from homeserver.errors import MatrixError, forbidden, unrecognized
from homeserver.http import client_ip, listener_for_request
from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import StreamToken

from .follower import ReplicationFollower
from .writers import write_shard_key

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Replication-Secret"
TOKEN_HEADER = "X-Replication-Token"
REPLICATION_PREFIX = "/_replication/"  # process-to-process requests, secret-authenticated
PRESENCE_PATH = "/_replication/presence"
BACKFILL_PATH = "/_replication/backfill"  # a worker's /messages ran out of history
FORWARD_CONNECTIONS = 256
FORWARD_TIMEOUT_S = 120.0
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        SECRET_HEADER.lower(),
        TOKEN_HEADER.lower(),
    }
)

_C = r"^/_matrix/client/(?:r0|v3|v1|unstable(?:/[^/]+)?)"
_F = r"^/_matrix/federation/v[12]"
# What a worker answers itself: reads that need no single writer. Synapse's generic
# worker list, narrowed to requests that write nothing with a stream position here.
READ_ROUTES: dict[str, tuple[re.Pattern[str], ...]] = {
    "GET": tuple(
        re.compile(p)
        for p in (
            _C + r"/sync$",
            _C + r"/events$",
            _C + r"/initialSync$",
            _C + r"/rooms/[^/]+/(?:initialSync|messages|context/[^/]+|event/[^/]+|state"
            r"|state/.*|members|joined_members|relations/.*|threads|aliases|hierarchy)$",
            _C + r"/joined_rooms$",
            _C + r"/profile/[^/]+(?:/[^/]+)?$",
            _C + r"/login$",
            _C + r"/(?:capabilities|versions|pushrules/.*|account/whoami|devices"
            r"|devices/[^/]+|keys/changes|notifications|publicRooms|joined_rooms|pushers)$",
            _C + r"/register/(?:available|m\.login\.registration_token/validity)$",
            _C + r"/(?:voip/turnServer|account/3pid|directory/list/room/[^/]+)$",
            _C + r"/user/[^/]+/rooms/[^/]+/tags$",
            _C + r"/presence/[^/]+/status$",
            _C + r"/room_keys/(?:version|version/[^/]+|keys|keys/[^/]+|keys/[^/]+/[^/]+)$",
            _C + r"/user/[^/]+/(?:filter/[^/]+|account_data/[^/]+"
            r"|rooms/[^/]+/account_data/[^/]+)$",
            _C + r"/directory/room/[^/]+$",
            r"^/_matrix/client/versions$",
            _F + r"/(?:event/[^/]+|state/[^/]+|state_ids/[^/]+|backfill/[^/]+"
            r"|event_auth/[^/]+/[^/]+|query/(?:profile|directory)|publicRooms"
            r"|hierarchy/[^/]+|user/devices/[^/]+|version)$",
            r"^/_matrix/key/v2/server(?:/[^/]*)?$",
        )
    ),
    "POST": tuple(
        re.compile(p)
        for p in (
            _C + r"/search$",
            _C + r"/user_directory/search$",
            _C + r"/publicRooms$",
            # Device keys: read here, other servers' asked with the reader's own
            # federation client (homeserver.composition_federation.remote_keys).
            _C + r"/keys/query$",
            # A saved filter: a row with a per-user ID the database allocates (a race
            # between processes is retried), no stream position, never changed after.
            _C + r"/user/[^/]+/filter$",
            r"^/_matrix/client/unstable/org\.matrix\.simplified_msc3575/sync$",
            _F + r"/get_missing_events/[^/]+$",
        )
    ),
    # A presence change: every process hands it to the presence writer itself
    # (PresenceService.forward_set) and reads the new row back at once.
    "PUT": (re.compile(_C + r"/presence/[^/]+/status$"),),
}


# Account data and tag writes: served by a worker named in `stream_writers:
# {account_data: [...]}` (the store allocates positions in the write transaction).
ACCOUNT_DATA_WRITES: dict[str, tuple[re.Pattern[str], ...]] = {
    "PUT": (
        re.compile(_C + r"/user/[^/]+/(?:rooms/[^/]+/)?account_data/[^/]+$"),
        re.compile(_C + r"/user/[^/]+/rooms/[^/]+/tags/[^/]+$"),
    ),
    "DELETE": (re.compile(_C + r"/user/[^/]+/rooms/[^/]+/tags/[^/]+$"),),
}


# To-device sends: served by a worker named in `stream_writers: {to_device: [...]}`.
TO_DEVICE_WRITES: dict[str, tuple[re.Pattern[str], ...]] = {
    "PUT": (re.compile(_C + r"/sendToDevice/[^/]+/[^/]+$"),),
}

# Read receipts (public and private): served by a worker named in `stream_writers:
# {receipts: [...]}` (the store allocates receipt positions in the write transaction).
RECEIPT_WRITES: dict[str, tuple[re.Pattern[str], ...]] = {
    "POST": (re.compile(_C + r"/rooms/[^/]+/receipt/m\.read(?:\.private)?/[^/]+$"),),
}

# Read markers and receipts of any type: these may set m.fully_read (room account
# data) as well as receipts, so only a worker writing both streams serves them.
READ_MARKER_WRITES: dict[str, tuple[re.Pattern[str], ...]] = {
    "POST": (
        re.compile(_C + r"/rooms/[^/]+/receipt/[^/]+/[^/]+$"),
        re.compile(_C + r"/rooms/[^/]+/read_markers$"),
    ),
}

# Push rule changes: a worker named in `stream_writers: {push_rules: [...]}` serves them
# when it also writes account data (each change rewrites the user's m.push_rules
# account data, which moves their /sync; the rulesets cache is dropped on every process).
PUSH_RULE_WRITES: dict[str, tuple[re.Pattern[str], ...]] = {
    "PUT": (re.compile(_C + r"/pushrules/.*$"),),
    "DELETE": (re.compile(_C + r"/pushrules/.*$"),),
}

# Devices and their keys: a worker named in `stream_writers: {device_lists: [...]}`
# - stores one-time, fallback, device and cross-signing keys (user-interactive auth
#   sessions are in the database), cross-signing signatures and device names (each but
#   one-time keys is a device-list change: announced on the bus, and queued as
#   m.device_list_update or m.signing_key_update EDUs for other servers);
# - hands out one-time keys (a claim is one write under the deployment's lock; the
#   appservice sender hears of it over the bus, MSC3202);
# - creates devices and sessions (/login by password, login token or appservice,
#   /refresh, /login/get_token: rate limits are the deployment's, tokens in the
#   database) and deletes them (/logout, /logout/all, DELETE /devices/{id},
#   /delete_devices: the device, its tokens, which every process drops from its token
#   cache when told over the bus, keys, pushers and queued to-device messages); a new
#   or deleted device is a device-list change like the others;
# - registers accounts (/register with its UIA, guests, appservice users: the account
#   and its first session, as a login does; registration rate limits are the
#   deployment's);
# - keeps the devices' server-side key backup (/room_keys: versions and keys, each
#   change one write under the deployment's lock, so versions and etags stay exact
#   with writes on several processes);
# - sets and removes pushers (/pushers/set: deleted with their device; the pushers
#   cache is dropped on every process, so the pusher sends to the new gateway at once).
DEVICE_WRITES: dict[str, tuple[re.Pattern[str], ...]] = {
    "POST": (
        re.compile(_C + r"/register$"),
        re.compile(_C + r"/pushers/set$"),
        re.compile(_C + r"/room_keys/version$"),
        re.compile(_C + r"/keys/claim$"),
        re.compile(_C + r"/keys/upload(?:/[^/]+)?$"),
        re.compile(_C + r"/keys/signatures/upload$"),
        re.compile(_C + r"/keys/device_signing/upload$"),
        re.compile(_C + r"/login(?:/get_token)?$"),
        re.compile(_C + r"/refresh$"),
        re.compile(_C + r"/logout(?:/all)?$"),
        re.compile(_C + r"/delete_devices$"),
    ),
    "PUT": (
        re.compile(_C + r"/devices/[^/]+$"),
        re.compile(_C + r"/room_keys/(?:version/[^/]+|keys|keys/[^/]+|keys/[^/]+/[^/]+)$"),
    ),
    "DELETE": (
        re.compile(_C + r"/devices/[^/]+$"),
        re.compile(_C + r"/room_keys/(?:version/[^/]+|keys|keys/[^/]+|keys/[^/]+/[^/]+)$"),
    ),
}

# Typing notifications: a worker named in `stream_writers: {typing: [...]}` keeps them
# itself (every process applies each announced change with a timer of its own, so
# several processes may write: unlike Synapse, whose typing has one writer).
TYPING_WRITES: dict[str, tuple[re.Pattern[str], ...]] = {
    "PUT": (re.compile(_C + r"/rooms/[^/]+/typing/[^/]+$"),),
}

# The writes a worker serves itself, by the streams it must write for them
# (WorkersConfig.reader_streams): a table is served where all its streams are written.
STREAM_WRITES: dict[frozenset[str], dict[str, tuple[re.Pattern[str], ...]]] = {
    frozenset({"account_data"}): ACCOUNT_DATA_WRITES,
    frozenset({"to_device"}): TO_DEVICE_WRITES,
    frozenset({"receipts"}): RECEIPT_WRITES,
    frozenset({"receipts", "account_data"}): READ_MARKER_WRITES,
    frozenset({"push_rules", "account_data"}): PUSH_RULE_WRITES,
    frozenset({"device_lists"}): DEVICE_WRITES,
    frozenset({"typing"}): TYPING_WRITES,
}


def stream_write_tables(streams: Iterable[str]) -> list[dict[str, tuple[re.Pattern[str], ...]]]:
    """The write routes a process writing `streams` serves, in a stable order."""
    have = frozenset(streams)
    return [
        table
        for needed, table in sorted(STREAM_WRITES.items(), key=lambda kv: sorted(kv[0]))
        if needed <= have
    ]


def writes_stream(streams: Iterable[str], method: str, path: str) -> bool:
    """Whether the request writes only `streams` (a worker writing them serves it)."""
    return any(
        p.match(path) for table in stream_write_tables(streams) for p in table.get(method, ())
    )


# A federation transaction (a federation inbound worker serves it, writing nothing itself).
SEND = re.compile(r"^/_matrix/federation/v1/send/[^/]+$")

# Everything of the media repository (a worker with a `media` listener serves it all).
MEDIA_ROUTES = re.compile(r"^/_matrix/(?:media/(?:v1|v3|r0)|client/v1/media|federation/v1/media)/")
# The admin API's media endpoints (homeserver/admin_api/media.py), which read and
# delete the media store's files: served by media workers too, as Synapse's, so with
# media workers nothing on the main touches the store.
MEDIA_ADMIN_ROUTES = re.compile(
    r"^/_synapse/admin/v1/(?:media/|purge_media_cache$|users?/[^/]+/media(?:/|$))"
)


def served_here(method: str, path: str, serves_media: bool = False) -> bool:
    """Whether a worker serves the request itself (READ_ROUTES, and media on a media
    worker). Reads that ask other servers (their users' profiles and keys, their
    aliases, room directories and spaces) are served too: every client reader has a
    federation client of its own (composition_federation.reader_federation_client)."""
    if serves_media and (MEDIA_ROUTES.match(path) or MEDIA_ADMIN_ROUTES.match(path)):
        return True
    return any(p.match(path) for p in READ_ROUTES.get(method, ()))


class Unreachable(Exception):
    """An event persister refused the connection: the request was not sent."""


class Forwarder:
    """A client of the other processes' replication listeners (the main's, and event
    persisters'), waiting after each answer until this process has caught up."""

    def __init__(
        self,
        main_url: str,
        secret: str,
        follower: ReplicationFollower,
        presence_url: str | None = None,
        room_writer: Callable[[str], str | None] = lambda _room: None,
    ) -> None:
        self._main_url = main_url.rstrip("/")
        # room ID -> its event persister's replication URL (None: the main writes it).
        self._room_writer = room_writer
        # The presence writer's replication listener (`stream_writers: {presence:
        # [...]}`), else the main's.
        self._presence_url = (presence_url or main_url).rstrip("/")
        self._secret = secret
        self._follower = follower
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=FORWARD_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, request: web.Request) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers[SECRET_HEADER] = self._secret
        headers["X-Forwarded-For"] = client_ip(request)
        return headers

    async def forward(self, request: web.Request, to: str | None = None) -> web.StreamResponse:
        """Hand `request` to the main, or to the process at `to` (an event persister):
        then a refused connection (nothing was sent) raises Unreachable instead of
        answering 502, so the caller can write the room itself."""
        body: Any = request.content if request.can_read_body else None
        try:
            async with self._client().request(
                request.method,
                # Byte for byte: X-Matrix signatures cover the request URI as sent.
                URL((to or self._main_url) + request.raw_path, encoded=True),
                headers=self._headers(request),
                data=body,
                allow_redirects=False,
            ) as upstream:
                token = upstream.headers.get(TOKEN_HEADER)
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-encoding":
                        response.headers.add(key, value)
                if "Content-Encoding" in upstream.headers:
                    response.headers["Content-Encoding"] = upstream.headers["Content-Encoding"]
                if token:
                    await self._catch_up(token)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(64 * 1024):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientConnectorError as exc:
            if to is not None:
                raise Unreachable(to) from exc
            log.warning("Forwarding %s %s to main: %s", request.method, request.path, exc)
            raise MatrixError(502, "M_UNKNOWN", "The main process is unreachable") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("Forwarding %s %s to %s: %s", request.method, request.path, to, exc)
            raise MatrixError(502, "M_UNKNOWN", "A process of this server is unreachable") from None

    async def _catch_up(self, encoded: str) -> None:
        try:
            token = StreamToken.decode(encoded)
        except MatrixError:
            return
        # Typing and presence live in the main's memory and restart from zero with it;
        # only the persisted streams are waited for.
        wanted = token.copy_with(typing=0, presence=0)
        if not await self._follower.wait_for(wanted):
            log.warning("Replication lags behind the main process (waited for %s)", encoded)

    async def call(self, to: str | None, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST `body` to `path` on the main's replication listener (or on the process
        at `to`): its status and JSON answer (None if it sent none). A refused
        connection raises Unreachable (nothing was sent); other failures 502."""
        url = (to or self._main_url) + path
        try:
            async with self._client().post(
                url, json=body, headers={SECRET_HEADER: self._secret}
            ) as response:
                try:
                    return response.status, await response.json(content_type=None)
                except ValueError:
                    return response.status, None
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(to or self._main_url) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("POST %s: %s", url, exc)
            raise MatrixError(502, "M_UNKNOWN", "A process of this server is unreachable") from None

    async def backfill(self, room_id: str, limit: int) -> int:
        """The room's writer (its event persister, else or when that is unreachable
        the main) fetches older history from other servers and persists it (the
        worker's /messages then reads it from the database); the count it added."""
        body: Any = None
        for url in dict.fromkeys([self._room_writer(room_id), None]):
            try:
                status, body = await self.call(
                    url, BACKFILL_PATH, {"room_id": room_id, "limit": limit}
                )
            except (Unreachable, MatrixError):
                continue
            if status == 200:
                break
        added = body.get("added") if isinstance(body, dict) else None
        return added if isinstance(added, int) else 0

    async def report_syncs(self, body: dict[str, Any]) -> None:
        """Which users are syncing here (replication/sync_reports.py)."""
        await self._report_presence(body)

    async def report_active(self, user_id: str) -> None:
        """A user acted here (sent a message): the presence writer brings them online."""
        await self._report_presence({"user_id": user_id, "active": True})

    async def report_remote(self, update: dict[str, Any]) -> None:
        """Another server's presence update for one of its users (origin checked)."""
        await self._report_presence({"remote": update})

    async def set_presence(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A user set their presence here: the writer's new row (its JSON). Unlike the
        reports this is the client's request itself: an unreachable writer is a 502."""
        try:
            status, answer = await self.call(self._presence_url, PRESENCE_PATH, body)
        except Unreachable:
            raise MatrixError(502, "M_UNKNOWN", "The presence writer is unreachable") from None
        if status != 200 or not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", f"The presence writer answered {status}")
        row = answer.get("row")
        return row if isinstance(row, dict) else None

    async def _report_presence(self, body: dict[str, Any]) -> None:
        """Best effort: presence is not worth a retry (the writer may be restarting)."""
        if self._session is not None and self._session.closed:
            return  # shutting down
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, RuntimeError):
            async with self._client().post(
                self._presence_url + PRESENCE_PATH,
                json=body,
                headers={SECRET_HEADER: self._secret},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                await response.read()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def worker_middleware(
    forwarder: Callable[[Any], Forwarder],
    serves_media: bool = False,
    persister_for: Callable[[str], str | None] = lambda _room: None,
    receives_transactions: bool = False,
    writes_here: frozenset[str] = frozenset(),
    replication_listener: bool = False,
) -> Any:
    """`forwarder` finds the worker's Forwarder in app state (built after the app);
    `persister_for(room_id)`: the URL of the event persister writing that room (None
    without persisters); a write to a room goes there, or to the main while that
    persister is unreachable. `receives_transactions`: a federation inbound worker serves /send itself
    (replication/federation.py: it checks, the rooms' writers write).
    `writes_here`: the streams this worker writes (account data, to-device): it serves
    their writes itself. `replication_listener`: what arrives on its replication
    listener (authenticated before this middleware) is served here, never forwarded."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(REPLICATION_PREFIX) and not is_replication_request(request):
            # Never handed on: the forward carries the secret, so the main would take a
            # stranger's request for one of ours (checked PDUs, EDUs, presence).
            raise unrecognized()
        if (
            request.method == "OPTIONS"
            or (replication_listener and is_replication_request(request))
            or served_here(request.method, request.path, serves_media)
            or (receives_transactions and request.method == "PUT" and SEND.match(request.path))
            or (writes_here and writes_stream(writes_here, request.method, request.path))
        ):
            return await handler(request)
        key = _shard_key(request)
        url = persister_for(key) if key is not None else None
        if url is not None:
            with contextlib.suppress(Unreachable):
                return await forwarder(request.config_dict).forward(request, url)
            log.warning("Event persister %s unreachable: %s goes to the main", url, key)
        return await forwarder(request.config_dict).forward(request)

    return middleware


def persister_middleware(
    forwarder: Callable[[Any], Forwarder | None], persister_for: Callable[[str], str | None]
) -> Any:
    """The main with event persisters: a room write from the public listener goes to
    the room's persister; from the replication listener (a worker whose persister was
    unreachable), or while the persister is unreachable, it is written here."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = _shard_key(request)
        url = persister_for(key) if key is not None else None
        current = forwarder(request.config_dict)
        if url is not None and current is not None and not is_replication_request(request):
            with contextlib.suppress(Unreachable):
                return await current.forward(request, url)
            log.warning("Event persister %s unreachable: writing %s here", url, key)
        return await handler(request)

    return middleware


def _shard_key(request: web.Request) -> str | None:
    """writers.write_shard_key of a request (its token as sent: only a hash input).
    A send that only schedules a delayed event writes no room: the main runs their
    timer (homeserver/delayed), so it goes there."""
    if DELAY_PARAM in request.query:
        return None
    token = request.headers.get("Authorization") or request.query.get("access_token")
    return write_shard_key(request.method, request.path, token)


def is_replication_request(request: web.Request) -> bool:
    listener = listener_for_request(request)
    return listener is not None and "replication" in listener.resources


def replication_middleware(
    secret: str,
    notifier: Callable[[Any], Notifier | None],
    written: Callable[[Any], int] = lambda _app: 0,
) -> Any:
    """The serving side (the main, event persisters): authenticate, serve, and say
    which positions the answer covers (`written`: the newest event position this
    process wrote, which its notifier may not have reached yet)."""
    expected = secret.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_replication_request(request):
            return await handler(request)
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            raise forbidden("This listener is for the processes of this server only")
        response = await handler(request)
        current = notifier(request.config_dict)
        if current is not None and not response.prepared:
            token = current.current
            local = written(request.config_dict)
            if local > token.events:
                token = token.copy_with(events=local)
            response.headers[TOKEN_HEADER] = token.encode()
        return response

    return middleware
