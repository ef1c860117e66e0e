"""Pushing events to application services: `PUT {url}/_matrix/app/v1/transactions/{txnId}`.

An appservice gets every new event of a room where one of its users is joined, whose
sender or member-event target is in its user namespace, whose room matches its room
namespace, or whose room's canonical alias matches its alias namespace. Per appservice,
one transaction is in flight at a time, at most MAX_EVENTS_PER_TXN events, sent with
the `hs_token`; a failure retries the same transaction (same ID: appservices dedupe on
it) with exponential backoff from 1 s to RETRY_MAX_S (about 8.5 minutes, as Synapse).
Durability: each appservice's position in the event stream is stored
(appservice_positions) once everything up to it was delivered or found of no interest;
after a restart the sender first reads the events after that position from the
database, routes them, and only then goes on with new ones, so a restart (ours or the
appservice's) loses nothing. An appservice configured for the first time starts from
the present. Typing and receipts (ephemeral) are not replayed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from homeserver.events import Event
from homeserver.rooms.client_events import format_client_event
from homeserver.storage import Stores
from homeserver.storage.appservices import AppServiceStore

from .devices import AppServiceDevices
from .registry import AppService, AppServices

log = logging.getLogger(__name__)

MAX_EVENTS_PER_TXN = 100
MAX_QUEUED = 100_000
CATCH_UP_BATCH = 500
# The stored position is written at most every this many routed events while idle.
POSITION_WRITE_EVERY = 200
RETRY_MIN_S = 1.0
RETRY_MAX_S = 512.0
REQUEST_TIMEOUT_S = 60.0
THIRD_PARTY_TIMEOUT_S = 15.0
MAX_THIRD_PARTY_BYTES = 1024 * 1024


class AppServiceSender:
    def __init__(self, services: AppServices, stores: Stores, positions: AppServiceStore) -> None:
        self._services = services
        self._stores = stores
        self._positions = positions
        self._incoming: deque[tuple[Event, int]] = deque()
        # Per appservice: every event up to routed[id] was routed (queued or skipped);
        # stored[id] is what the database says was delivered.
        self._routed: dict[str, int] = {}
        self._stored: dict[str, int] = {}
        self._since_write: dict[str, int] = {}
        self._caught_up = asyncio.Event()
        self._router: asyncio.Task[None] | None = None
        self._queues: dict[str, deque[tuple[int, dict[str, Any]]]] = {
            s.id: deque() for s in services.all
        }
        # Typing and receipts for appservices that asked (receive_ephemeral, MSC2409).
        self._ephemeral: dict[str, deque[dict[str, Any]]] = {s.id: deque() for s in services.all}
        self._ephemeral_incoming: deque[tuple[str, int, tuple[str, ...]]] = deque()
        self._typing: Any = None
        self._receipts: Any = None
        self._devices: AppServiceDevices | None = None  # to-device, MSC3202
        # Only a started sender delivers (a worker process builds one and never starts
        # it: the main delivers).
        self._started = False
        self._resuming: asyncio.Task[None] | None = None
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._txn_base = int(time.time() * 1000)  # transaction IDs never repeat across runs
        self._txn_counter = 0
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # Set on the main when a worker sends to appservices (notify_appservices_from_
        # worker): E2EE device news heard here is published for it (`replicated`).
        self.forward: Callable[[dict[str, Any]], None] | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "homeserver-py appservice"}
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        tasks = [
            t for t in (self._router, self._resuming, *self._workers.values()) if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- ephemeral events (MSC2409) ---------------------------------------------------------

    def attach_ephemeral(self, typing: Any, receipts: Any, notifier: Any) -> None:
        """The typing and receipt services, once built (they come after the room
        service), and the notifier whose announcements say when they change."""
        self._typing = typing
        self._receipts = receipts
        notifier.observers.append(self.on_announcement)

    def attach_devices(self, devices: AppServiceDevices, keys: Any, device_lists: Any) -> None:
        """To-device messages and E2EE device data (homeserver.appservice.devices), with
        the E2EE services that tell of claimed keys and changed device lists."""
        self._devices = devices

        def claimed(user_id: str, device_id: str) -> None:
            if self.forward is not None:
                self.forward({"k": "as_keys", "u": user_id, "d": device_id})
            else:
                self._wake(devices.key_claimed(user_id, device_id))

        async def changed(change: Any) -> None:
            if self.forward is not None:
                self.forward(
                    {"k": "as_devices", "u": change.user_id, "i": sorted(change.interested)}
                )
            else:
                self._wake(devices.devices_changed(change.user_id, change.interested))

        keys.claim_listeners.append(claimed)
        device_lists.add_listener(changed)
        if self._started:  # to-device messages still queued for our users
            self._resuming = asyncio.get_running_loop().create_task(self.resume_to_device())

    async def resume_to_device(self) -> None:
        """Wake the appservices whose users have to-device messages queued (after a
        restart, or a replication gap on the appservice sender worker)."""
        if self._devices is not None:
            self._wake(await self._devices.resume())

    def replicated(self, message: dict[str, Any]) -> None:
        """On the appservice sender worker: a key claim or device list change the main
        heard of (what `forward` published there)."""
        user_id, devices = message.get("u"), self._devices
        if not isinstance(user_id, str) or devices is None:
            return
        if message.get("k") == "as_keys" and isinstance(message.get("d"), str):
            self._wake(devices.key_claimed(user_id, message["d"]))
        elif message.get("k") == "as_devices" and isinstance(message.get("i"), list):
            interested = frozenset(u for u in message["i"] if isinstance(u, str))
            self._wake(devices.devices_changed(user_id, interested))

    def _wake(self, services: list[AppService]) -> None:
        if self._started and not self._closed:
            for service in services:
                self._start_delivery(service)

    def on_announcement(
        self, stream: str, position: int, users: tuple[str, ...], rooms: tuple[str, ...]
    ) -> None:
        """A Notifier observer: typing and receipt changes of rooms, to-device messages."""
        if not self._started or self._closed:
            return
        if stream == "to_device" and self._devices is not None:
            self._wake(self._devices.to_device_queued(users))
            return
        if stream not in ("typing", "receipts") or not rooms:
            return
        if not any(s.config.receive_ephemeral and s.config.url for s in self._services.all):
            return
        self._ephemeral_incoming.append((stream, position, rooms))
        if self._router is None or self._router.done():
            self._router = asyncio.get_running_loop().create_task(self._route())

    async def _route_ephemeral(self, stream: str, position: int, rooms: tuple[str, ...]) -> None:
        for service in self._services.all:
            if not service.config.receive_ephemeral or service.config.url is None:
                continue
            for room_id in rooms:
                joined = await self._stores.current_state.get_users_in_room(room_id)
                if not any(service.is_user_in_namespace(u) for u in joined):
                    continue
                if stream == "typing" and self._typing is not None:
                    event = {**self._typing.event_for(room_id), "room_id": room_id}
                    self._enqueue_ephemeral(service, event)
                elif stream == "receipts" and self._receipts is not None:
                    found = await self._receipts.receipts_for_sync(
                        service.sender, [room_id], position - 1, position
                    )
                    if room_id in found:
                        self._enqueue_ephemeral(service, {**found[room_id], "room_id": room_id})

    def _enqueue_ephemeral(self, service: AppService, event: dict[str, Any]) -> None:
        queue = self._ephemeral[service.id]
        if len(queue) >= MAX_QUEUED:
            queue.popleft()
        queue.append(event)
        self._start_delivery(service)

    # -- the room service's listener -----------------------------------------------------

    async def start(self) -> None:
        """Load positions (a new appservice starts from now), then catch up in the
        background on what was persisted since each position."""
        self._started = True
        now = await self._stores.events.get_current_stream_position()
        lowest = now
        for service in self._services.all:
            if service.config.url is None:
                continue
            stored = await self._positions.get_position(service.id)
            if stored is None:
                stored = now
                await self._positions.set_position(service.id, now)
            self._stored[service.id] = self._routed[service.id] = stored
            lowest = min(lowest, stored)
        if lowest >= now:
            self._caught_up.set()
            return
        self._router = asyncio.get_running_loop().create_task(self._catch_up(lowest, now))

    async def _catch_up(self, since: int, upto: int) -> None:
        try:
            while since < upto:
                rows = await self._positions.timeline_after(since, upto, CATCH_UP_BATCH)
                if not rows:
                    break
                for event, stream_ordering in rows:
                    await self._route_event(event, stream_ordering)
                since = rows[-1][1]
            for service_id in self._routed:
                self._routed[service_id] = max(self._routed[service_id], upto)
            log.info("appservices caught up to stream position %d", upto)
        except Exception:
            log.exception("appservice catch-up failed")
        finally:
            self._caught_up.set()
        await self._route()

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if self._closed or stream_ordering <= 0 or not self._services or not self._started:
            return  # history fetched from other servers is not news; another process sends
        self._incoming.append((event, stream_ordering))
        if self._router is None or self._router.done():
            self._router = asyncio.get_running_loop().create_task(self._route())

    async def _route_event(self, event: Event, stream_ordering: int) -> None:
        for service in self._services.all:
            if service.config.url is None:
                continue
            if stream_ordering <= self._routed.get(service.id, 0):
                continue  # already routed (caught up from the database)
            try:
                if await self._interested(service, event):
                    self._enqueue(service, event, stream_ordering)
            except Exception:
                log.exception("routing %s to %s failed", event.event_id, service.id)
            self._routed[service.id] = stream_ordering
            await self._maybe_store_position(service)

    async def _maybe_store_position(self, service: AppService) -> None:
        """While nothing is queued, move the stored position along now and then."""
        if self._queues[service.id]:
            return
        count = self._since_write.get(service.id, 0) + 1
        self._since_write[service.id] = count
        if count >= POSITION_WRITE_EVERY:
            await self._store_position(service)

    async def _store_position(self, service: AppService) -> None:
        queue = self._queues[service.id]
        position = self._routed.get(service.id, 0)
        if queue:
            position = min(position, queue[0][0] - 1)
        if position > self._stored.get(service.id, -(2**62)):
            await self._positions.set_position(service.id, position)
            self._stored[service.id] = position
        self._since_write[service.id] = 0

    async def _route(self) -> None:
        await self._caught_up.wait()
        while self._incoming or self._ephemeral_incoming:
            if self._incoming:
                event, stream_ordering = self._incoming.popleft()
                await self._route_event(event, stream_ordering)
            else:
                stream, position, rooms = self._ephemeral_incoming.popleft()
                try:
                    await self._route_ephemeral(stream, position, rooms)
                except Exception:
                    log.exception("routing %s to appservices failed", stream)

    async def _interested(self, service: AppService, event: Event) -> bool:
        if service.is_user_in_namespace(event.sender):
            return True
        if (
            event.type == "m.room.member"
            and event.state_key
            and service.is_user_in_namespace(event.state_key)
        ):
            return True
        if service.is_room_in_namespace(event.room_id):
            return True
        joined = await self._stores.current_state.get_users_in_room(event.room_id)
        if any(service.is_user_in_namespace(u) for u in joined):
            return True
        if service.config.aliases:
            alias_id = await self._stores.current_state.get_current_state_event_id(
                event.room_id, "m.room.canonical_alias"
            )
            alias_event = await self._stores.events.get_event(alias_id) if alias_id else None
            alias = alias_event.content.get("alias") if alias_event is not None else None
            if isinstance(alias, str) and service.is_alias_in_namespace(alias):
                return True
        return False

    def _enqueue(self, service: AppService, event: Event, stream_ordering: int) -> None:
        queue = self._queues[service.id]
        if len(queue) >= MAX_QUEUED:
            queue.popleft()
            log.warning("appservice %s is far behind: dropped its oldest queued event", service.id)
        queue.append((stream_ordering, format_client_event(event, now_ms=int(time.time() * 1000))))
        self._start_delivery(service)

    def _start_delivery(self, service: AppService) -> None:
        worker = self._workers.get(service.id)
        if worker is None or worker.done():
            self._workers[service.id] = asyncio.get_running_loop().create_task(
                self._deliver(service)
            )

    # -- transactions ----------------------------------------------------------------------

    def _next_txn_id(self) -> str:
        self._txn_counter += 1
        return f"{self._txn_base}_{self._txn_counter}"

    async def _deliver(self, service: AppService) -> None:
        queue, ephemeral = self._queues[service.id], self._ephemeral[service.id]
        devices = self._devices
        delay = RETRY_MIN_S
        while queue or ephemeral or (devices is not None and devices.has_pending(service)):
            batch = [queue[i][1] for i in range(min(len(queue), MAX_EVENTS_PER_TXN))]
            extra = [ephemeral[i] for i in range(min(len(ephemeral), MAX_EVENTS_PER_TXN))]
            body: dict[str, Any] = {"events": batch}
            if extra:
                body["ephemeral"] = extra
                body["de.sorunome.msc2409.ephemeral"] = extra
            data = await devices.take(service) if devices is not None else None
            if data is not None:
                body.update(data.fields)
            txn_id = self._next_txn_id()
            while not await self._put(service, txn_id, body):
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            delay = RETRY_MIN_S
            for _ in batch:
                queue.popleft()
            for _ in extra:
                ephemeral.popleft()
            if data is not None and devices is not None:
                await devices.delivered(data)
            if batch:
                await self._store_position(service)

    async def _put(self, service: AppService, txn_id: str, body: dict[str, Any]) -> bool:
        assert service.config.url is not None
        url = f"{service.config.url.rstrip('/')}/_matrix/app/v1/transactions/{quote(txn_id)}"
        try:
            async with self._get_session().put(
                url,
                json=body,
                headers={"Authorization": f"Bearer {service.config.hs_token}"},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    return True
                log.info("appservice %s answered %d to a transaction", service.id, resp.status)
                return False
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            log.info("appservice %s unreachable: %s", service.id, type(e).__name__)
            return False

    # -- queries and ping -------------------------------------------------------------------

    async def _get(
        self, service: AppService, path: str, params: dict[str, str] | None = None
    ) -> tuple[int, bytes] | None:
        """GET {url}/_matrix/app/v1/{path} with the hs_token: (status, body read up to
        MAX_THIRD_PARTY_BYTES), or None when the appservice could not be reached."""
        if service.config.url is None:
            return None
        try:
            async with self._get_session().get(
                f"{service.config.url.rstrip('/')}/_matrix/app/v1/{path}",
                params=params,
                headers={"Authorization": f"Bearer {service.config.hs_token}"},
                timeout=aiohttp.ClientTimeout(total=THIRD_PARTY_TIMEOUT_S),
            ) as resp:
                return resp.status, await resp.content.read(MAX_THIRD_PARTY_BYTES)
        except (TimeoutError, aiohttp.ClientError, OSError):
            log.info("appservice %s: GET %s failed", service.id, path[:60])
            return None

    async def query_alias(self, alias: str) -> bool:
        """Ask the appservices whose namespace holds `alias` to create it; True if one
        answered 200 (then the alias should exist)."""
        for service in self._services.for_alias(alias):
            answer = await self._get(service, f"rooms/{quote(alias, safe='')}")
            if answer is not None and answer[0] == 200:
                return True
        return False

    async def query_user(self, user_id: str) -> bool:
        """Ask the appservices whose namespace holds `user_id` to create that user;
        True if one answered 200 (then the user should exist)."""
        for service in self._services.all:
            if service.is_user_in_namespace(user_id):
                answer = await self._get(service, f"users/{quote(user_id, safe='')}")
                if answer is not None and answer[0] == 200:
                    return True
        return False

    async def third_party(
        self, path: str, query: dict[str, str], protocol: str | None = None
    ) -> list[Any]:
        """GET `path` (under /_matrix/app/v1/thirdparty/) of every appservice that
        declares `protocol` (or of all that declare one): the answers that are JSON."""
        answers: list[Any] = []
        for service in self._services.all:
            if not service.config.protocols:
                continue
            if protocol is not None and protocol not in service.config.protocols:
                continue
            answer = await self._get(service, f"thirdparty/{path}", query)
            if answer is not None and answer[0] == 200:
                try:
                    answers.append(_with_instance_ids(service.id, json.loads(answer[1])))
                except ValueError:
                    log.info("appservice %s: third-party answer is not JSON", service.id)
        return answers

    async def ping(self, service: AppService, transaction_id: str | None) -> int:
        """POST /_matrix/app/v1/ping; the round trip in ms. Raises PingError."""
        if service.config.url is None:
            raise PingError(400, "M_URL_NOT_SET", "The appservice has no URL")
        url = f"{service.config.url.rstrip('/')}/_matrix/app/v1/ping"
        body = {"transaction_id": transaction_id} if transaction_id is not None else {}
        started = time.monotonic()
        try:
            async with self._get_session().post(
                url,
                json=body,
                headers={"Authorization": f"Bearer {service.config.hs_token}"},
                timeout=aiohttp.ClientTimeout(total=15),
            ) as resp:
                text = (await resp.content.read(4096)).decode("utf-8", "replace")
                if resp.status != 200:
                    raise PingError(
                        502, "M_BAD_STATUS", "Ping returned error status", resp.status, text
                    )
        except TimeoutError:
            raise PingError(
                504, "M_CONNECTION_TIMEOUT", "Connection to appservice timed out"
            ) from None
        except (aiohttp.ClientError, OSError):
            raise PingError(502, "M_CONNECTION_FAILED", "Connection to appservice failed") from None
        return int((time.monotonic() - started) * 1000)


def _with_instance_ids(service_id: str, answer: Any) -> Any:
    """A protocol's instances get `instance_id` "<appservice>|<network_id>", what
    /publicRooms takes as `third_party_instance_id` (the appservice's network list)."""
    instances = answer.get("instances") if isinstance(answer, dict) else None
    for instance in instances if isinstance(instances, list) else ():
        if isinstance(instance, dict) and isinstance(instance.get("network_id"), str):
            instance["instance_id"] = f"{service_id}|{instance['network_id']}"
    return answer


class PingError(Exception):
    def __init__(
        self, status: int, errcode: str, message: str, upstream: int | None = None, body: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.upstream = upstream
        self.body = body
