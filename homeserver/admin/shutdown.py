"""Deleting a room (Synapse's DELETE /rooms/<id>) and purging a room's old history.

Deleting runs as a background job (`JobRunner`), in Synapse's steps:

1. block the room if asked (so nobody local can come back in);
2. unpublish it, and if `new_room_user_id` is given create a replacement room
   (users_default -10: readers only) with an explanation in it;
3. make every local member leave (joined, invited, knocking), forget the room for
   them, and join those who were joined to the replacement room;
4. move the room's local aliases to the replacement room (or drop them);
5. purge: the room service deletes every row of the room under the room's lock
   (`homeserver.rooms.purge.RoomPurger`) and drops the caches that could serve it.

After that nothing of the room is served: /event, /messages, /sync and the admin
API answer as for a room this server never knew. The job's progress (who was kicked)
is stored as it goes, which the status endpoints show.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from homeserver.errors import MatrixError, not_found
from homeserver.rooms.creation import RoomCreator, RoomSpec
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.purge import RoomPurger
from homeserver.storage import AccountStore, Stores
from homeserver.storage.admin_rooms import AdminRoomStore
from homeserver.storage.room_directory import RoomReadStore

from .jobs import JobRunner

log = logging.getLogger(__name__)

SHUTDOWN_ACTION = "shutdown_and_purge_room"
PURGE_HISTORY_ACTION = "purge_history"
DEFAULT_ROOM_NAME = "Content Violation Notification"
DEFAULT_MESSAGE = (
    "Sharing illegal content on this server is not permitted and rooms in violation "
    "will be blocked."
)
KICKED_MEMBERSHIPS = ("join", "invite", "knock")

Progress = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class ShutdownParams:
    requester: str
    block: bool = False
    purge: bool = True
    force_purge: bool = False
    new_room_user_id: str | None = None
    room_name: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RoomShutdown:
    def __init__(
        self,
        server_name: str,
        jobs: JobRunner,
        stores: Stores,
        admin_rooms: AdminRoomStore,
        purger: RoomPurger,
        read_store: RoomReadStore,
        membership: MembershipService,
        creator: RoomCreator,
        local_events: LocalEvents,
        accounts: AccountStore,
        room_version: str,
    ) -> None:
        self._server_name = server_name
        self._room_version = room_version
        self._jobs = jobs
        self._stores = stores
        self._admin_rooms = admin_rooms
        self._purger = purger
        self._read = read_store
        self._membership = membership
        self._creator = creator
        self._events = local_events
        self._accounts = accounts

    def _is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self._server_name

    # -- room deletion ------------------------------------------------------------------

    async def start(self, room_id: str, params: ShutdownParams) -> str:
        """Check the request, queue the job, return its delete_id."""
        if params.new_room_user_id is not None and not self._is_local(params.new_room_user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "User must be our own: new_room_user_id")
        active = await self._jobs.store.find(action=SHUTDOWN_ACTION, resource_id=room_id)
        if any(j.status in ("scheduled", "active") for j in active):
            raise MatrixError(400, "M_UNKNOWN", f"Purge already in progress for {room_id}")
        known = await self._stores.rooms.get_room_version(room_id) is not None
        if not known and not params.block:
            raise not_found("Unknown room")

        async def body(progress: Progress) -> Any:
            return await self.shutdown(room_id, params, progress)

        job = await self._jobs.submit(SHUTDOWN_ACTION, room_id, params.to_json(), body)
        return job.job_id

    async def shutdown(
        self, room_id: str, params: ShutdownParams, progress: Progress
    ) -> dict[str, Any]:
        result: dict[str, Any] = {
            "kicked_users": [],
            "failed_to_kick_users": [],
            "local_aliases": [],
            "new_room_id": None,
        }
        if params.block:
            await self._admin_rooms.block_room(room_id, params.requester)
        if await self._stores.rooms.get_room_version(room_id) is None:
            return result
        await self._stores.rooms.set_room_is_public(room_id, False)
        new_room_id = None
        if params.new_room_user_id:
            new_room_id = await self._replacement_room(params)
            result["new_room_id"] = new_room_id
            await progress(result)
        members = await self._stores.current_state.get_members(room_id)
        for user_id, membership in sorted(members.items()):
            if not self._is_local(user_id) or membership not in KICKED_MEMBERSHIPS:
                continue
            try:
                await self._membership.set_membership(room_id, user_id, user_id, "leave")
                await self._read.forget_room(user_id, room_id)
                if new_room_id is not None and membership == "join":
                    await self._membership.join(new_room_id, user_id)
                result["kicked_users"].append(user_id)
            except Exception:
                log.exception("shutting down %s: could not remove %s", room_id, user_id)
                result["failed_to_kick_users"].append(user_id)
            await progress(result)
        aliases = await self._stores.rooms.get_aliases_for_room(room_id)
        if new_room_id is not None:
            assert params.new_room_user_id is not None
            await self._events.send(
                new_room_id,
                params.new_room_user_id,
                "m.room.message",
                {"msgtype": "m.text", "body": params.message or DEFAULT_MESSAGE},
            )
            for alias in aliases:
                info = await self._stores.rooms.get_alias(alias)
                await self._stores.rooms.delete_alias(alias)
                await self._stores.rooms.create_alias(
                    alias,
                    new_room_id,
                    info.servers if info else [self._server_name],
                    params.requester,
                )
            result["local_aliases"] = aliases
        await progress(result)
        if params.purge:
            await self._purger.delete_room(room_id, force=params.force_purge)
        return result

    async def _replacement_room(self, params: ShutdownParams) -> str:
        creator = params.new_room_user_id
        assert creator is not None
        if await self._accounts.get_user(creator) is None:
            # Synapse: the creator need not be a registered user; give it an account
            # without a password (nobody can log in as it).
            await self._accounts.create_user(creator, None, displayname=creator[1:].split(":")[0])
        spec = RoomSpec(
            room_version=self._room_version,
            preset="public_chat",
            name=params.room_name or DEFAULT_ROOM_NAME,
            power_level_content_override={"users_default": -10},
        )
        return await self._creator.create_room(creator, spec, {})

    async def wait(self, delete_id: str) -> dict[str, Any]:
        """The deletion's status once it finished (the synchronous v1 API)."""
        job = await self._jobs.wait_for(delete_id)
        if job is None:
            raise not_found("delete id not found")
        return delete_status_json(job)

    async def tasks(
        self,
        *,
        action: str | None,
        resource_id: str | None,
        status: str | None,
        max_timestamp: int | None,
    ) -> list[dict[str, Any]]:
        """Synapse's /v1/scheduled_tasks view of the admin jobs."""
        jobs = await self._jobs.store.find(
            action=action, resource_id=resource_id, status=status, max_timestamp=max_timestamp
        )
        return [
            {
                "id": j.job_id,
                "action": j.action,
                "status": j.status,
                "timestamp_ms": j.timestamp_ms,
                "resource_id": j.resource_id,
                "result": j.result,
                "error": j.error,
            }
            for j in jobs
        ]

    async def delete_status(self, room_id: str) -> list[dict[str, Any]]:
        jobs = await self._jobs.store.find(action=SHUTDOWN_ACTION, resource_id=room_id)
        return [delete_status_json(j) for j in jobs]

    async def delete_status_by_id(self, delete_id: str) -> dict[str, Any]:
        job = await self._jobs.store.get(delete_id)
        if job is None or job.action != SHUTDOWN_ACTION:
            raise not_found("delete id not found")
        return delete_status_json(job)

    # -- history purge ------------------------------------------------------------------

    async def start_purge_history(
        self,
        room_id: str,
        *,
        up_to_event_id: str | None,
        up_to_ts: int | None,
        delete_local_events: bool,
    ) -> str:
        """Queue a purge of the room's messages older than an event (exclusive) or a
        time; returns the purge_id."""
        if await self._stores.rooms.get_room_version(room_id) is None:
            raise not_found("Room not found")
        if up_to_event_id is not None:
            event = await self._stores.events.get_event(up_to_event_id)
            so = await self._stores.events.get_stream_ordering(up_to_event_id) if event else None
            if event is None or so is None or event.room_id != room_id:
                raise MatrixError(400, "M_UNKNOWN", "Event is for wrong room.")
            before_stream = so
        else:
            assert up_to_ts is not None
            before_stream = await self._admin_rooms.stream_before_ts(room_id, up_to_ts)

        async def body(progress: Progress) -> Any:
            return await self.history_purge(room_id, before_stream, delete_local_events)

        job = await self._jobs.submit(
            PURGE_HISTORY_ACTION,
            room_id,
            {"before_stream": before_stream, "delete_local_events": delete_local_events},
            body,
        )
        return job.job_id

    async def history_purge(
        self, room_id: str, before_stream: int, delete_local_events: bool
    ) -> dict[str, Any]:
        purged = await self._purger.delete_history(
            room_id, before_stream, delete_local_events=delete_local_events
        )
        return {"purged_events": purged}

    async def purge_status(self, purge_id: str) -> dict[str, Any]:
        job = await self._jobs.store.get(purge_id)
        if job is None or job.action != PURGE_HISTORY_ACTION:
            raise not_found("purge id not found")
        body: dict[str, Any] = {"status": job.status}
        if job.status == "failed" and job.error:
            body["error"] = job.error
        return body


def delete_status_json(job: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "delete_id": job.job_id,
        "room_id": job.resource_id,
        "status": job.status,
        "shutdown_room": job.result
        or {
            "kicked_users": [],
            "failed_to_kick_users": [],
            "local_aliases": [],
            "new_room_id": None,
        },
    }
    if job.status == "failed" and job.error:
        body["error"] = job.error
    return body
