"""Membership changes: join, leave, invite, kick, ban, unban, knock.

Local rooms get a membership event through `LocalEvents.send`. Rooms that only other
servers can vouch for (we are not in them, or the target is a remote user to invite)
go through the `RemoteRooms` port that federation implements; what it brings back is
persisted here, by the room service: joins through `RemoteEventIngest.persist_join`,
knocks and invite rejections as out-of-band memberships. Whether we are in a room, and
so whether a join is local, follows the room's current state only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from homeserver.config.prejoin import DEFAULT_TYPES as DEFAULT_PREJOIN_TYPES
from homeserver.errors import MatrixError, forbidden, invite_blocked, not_found
from homeserver.events import Event
from homeserver.moderation import Moderation
from homeserver.storage import Stores

from .complexity import RemoteRoomLimit
from .ingest import RemoteEventIngest
from .local_events import LocalEvents
from .out_of_band import OutOfBandMemberships, OutOfBandRefused
from .ports import JoinAnswer, RemoteProfileLookup, RemoteRooms

log = logging.getLogger(__name__)

# A remote server's answer about its user's profile is copied into our event: bounded
# like a profile field (Synapse's limits for displayname/avatar_url are 256/1000).
MAX_PROFILE_VALUE = 1000
# How long an invite waits for the remote invitee's profile before going without it.
INVITE_PROFILE_TIMEOUT_S = 5.0

STRIPPED_STATE_TYPES = DEFAULT_PREJOIN_TYPES  # (room_prejoin_state may change them)
# Stripped state events sent with an invite or knock at most (room_prejoin_state may
# name types with any state key: a room with thousands must not make every invite huge).
MAX_STRIPPED_STATE = 100


@dataclass(frozen=True)
class RemoteMembership:
    """What membership through other servers needs: the handshakes (federation's
    port) and the room service's writers for what they bring back."""

    rooms: RemoteRooms
    ingest: RemoteEventIngest
    out_of_band: OutOfBandMemberships
    # limit_remote_rooms (rooms/complexity.py); None: rooms of any size may be joined.
    limit: RemoteRoomLimit | None = None


class MembershipService:
    def __init__(
        self,
        stores: Stores,
        local_events: LocalEvents,
        server_name: str,
        remote: RemoteMembership | None = None,
        remote_profiles: RemoteProfileLookup | None = None,
        *,
        moderation: Moderation | None = None,
        invites_blocked: Callable[[str], Awaitable[bool]] | None = None,
        invite_profiles: bool = True,
        prejoin_state: tuple[tuple[str, str | None], ...] | None = None,
    ) -> None:
        # room_prejoin_state (Synapse's): the (type, state key; None: every key) of the
        # state an invitee or knocker is shown; None: STRIPPED_STATE_TYPES.
        self._prejoin = (
            tuple((t, "") for t in STRIPPED_STATE_TYPES) if prejoin_state is None else prejoin_state
        )
        # include_profile_data_on_invite (Synapse's): the invitee's name and avatar in
        # the invite event; off, an invite reveals nothing of the invitee's profile.
        self._invite_profiles = invite_profiles
        self._stores = stores
        self._events = local_events
        # A local user's m.invite_permission_config (v1.18); None: never blocked.
        self._invites_blocked = invites_blocked
        self._server_name = server_name
        self._remote = remote
        self._remote_profiles = remote_profiles
        # Admin decisions (suspended/shadow-banned users, blocked rooms); None: none.
        self._moderation = moderation

    async def _check_may_enter(self, room_id: str, user_id: str, what: str) -> None:
        """Suspended users may not join/knock; nobody local joins a blocked room."""
        if self._moderation is None:
            return
        self._moderation.check_not_suspended(user_id, what)
        await self._moderation.check_room_not_blocked(room_id)

    def _is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self._server_name

    async def check_invite_allowed(self, target: str) -> None:
        """403 M_INVITE_BLOCKED when `target` is ours and blocks invites (v1.18)."""
        if (
            self._invites_blocked is not None
            and self._is_local(target)
            and await self._invites_blocked(target)
        ):
            raise invite_blocked()

    async def profile_content(self, user_id: str) -> dict[str, Any]:
        profile = await self._stores.accounts.get_profile(user_id)
        content: dict[str, Any] = {}
        if profile is not None:
            if profile.displayname is not None:
                content["displayname"] = profile.displayname
            if profile.avatar_url is not None:
                content["avatar_url"] = profile.avatar_url
        return content

    async def _we_are_joined(self, room_id: str) -> bool:
        hosts = await self._stores.current_state.get_joined_hosts(room_id)
        return self._server_name in hosts

    async def join(
        self,
        room_id: str,
        user_id: str,
        servers: list[str] | None = None,
        reason: str | None = None,
        txn: tuple[str, str | None, str] | None = None,
        guest: bool = False,
    ) -> Event:
        await self._check_may_enter(room_id, user_id, "Joining rooms")
        content = await self.profile_content(user_id)
        content["membership"] = "join"
        if guest:
            # Guests are a local notion (no auth rule knows them): only rooms whose
            # state we hold and that say guest_access can_join, as Synapse; `kind`
            # marks the member so revoking guest access can make them leave.
            if not await self.guests_may_join(room_id):
                raise forbidden("Guest access not allowed")
            content["kind"] = "guest"
        if reason:
            content["reason"] = reason
        known = await self._stores.rooms.get_room_version(room_id) is not None
        if known and (await self._we_are_joined(room_id) or not self._remote):
            unchanged = await self._unchanged_membership(room_id, user_id, content)
            if unchanged is not None:
                # Already joined with this very content: Synapse answers 200 and emits
                # nothing, so a client retrying /join doesn't spam the room.
                return unchanged
            return await self._events.send(
                room_id, user_id, "m.room.member", content, user_id, txn=txn
            )
        if self._remote is None:
            raise not_found("No known servers to join the room through")
        candidates = list(servers or [])
        if known:
            candidates += await self._inviter_server(room_id, user_id)
            candidates += sorted(await self._stores.current_state.get_joined_hosts(room_id))
        server_of_room = room_id.partition(":")[2]
        if server_of_room and server_of_room not in candidates:
            candidates.append(server_of_room)
        candidates = [s for s in dict.fromkeys(candidates) if s and s != self._server_name]
        if not candidates:
            raise not_found("No known servers to join the room through")
        ingest = self._remote.ingest

        async def accept(answer: JoinAnswer) -> None:
            event = answer.event
            await ingest.persist_join(event.room_version, event, answer.state, answer.auth_chain)

        limit = self._remote.limit
        measure_after = limit is not None and await limit.before_remote_join(
            room_id, user_id, candidates
        )
        event = await self._remote.rooms.join(room_id, user_id, candidates, content, accept)
        if limit is not None and measure_after and await limit.too_complex_here(room_id):
            # No server told us the size beforehand and the state turned out too big:
            # leave again (as Synapse), so we stop receiving and resolving the room.
            log.info("%s joined %s, which is too complex: leaving", user_id, room_id)
            await self.set_membership(room_id, user_id, user_id, "leave")
            raise limit.refusal()
        return event

    async def guests_may_join(self, room_id: str) -> bool:
        """Whether the room's current state (as we hold it) lets guests join."""
        event_id = await self._stores.current_state.get_current_state_event_id(
            room_id, "m.room.guest_access", ""
        )
        event = None if event_id is None else await self._stores.events.get_event(event_id)
        return event is not None and event.content.get("guest_access") == "can_join"

    async def _unchanged_membership(
        self, room_id: str, user_id: str, content: dict[str, Any]
    ) -> Event | None:
        """The user's current member event if it already says exactly `content`."""
        info = await self._stores.current_state.get_membership_info(room_id, user_id)
        if info is None or info.membership != content.get("membership"):
            return None
        current = await self._stores.events.get_event(info.event_id)
        if current is None or current.sender != user_id or dict(current.content) != content:
            return None
        return current

    async def _inviter_server(self, room_id: str, user_id: str) -> list[str]:
        """The server of whoever invited `user_id` (an out-of-band invite): it can
        vouch for the join even when the room ID names no server (v12)."""
        info = await self._stores.current_state.get_membership_info(room_id, user_id)
        if info is None or info.membership != "invite":
            return []
        invite = await self._stores.events.get_event(info.event_id)
        return [invite.sender.partition(":")[2]] if invite is not None else []

    async def knock(
        self,
        room_id: str,
        user_id: str,
        servers: list[str] | None = None,
        reason: str | None = None,
    ) -> Event:
        """Knock on a room: locally if we are in it, else through a resident server."""
        await self._check_may_enter(room_id, user_id, "Knocking on rooms")
        content = await self.profile_content(user_id)
        content["membership"] = "knock"
        if reason:
            content["reason"] = reason
        known = await self._stores.rooms.get_room_version(room_id) is not None
        if known and (await self._we_are_joined(room_id) or not self._remote):
            return await self._events.send(room_id, user_id, "m.room.member", content, user_id)
        if self._remote is None:
            raise not_found("No known servers to knock on the room through")
        candidates = [s for s in dict.fromkeys(servers or []) if s and s != self._server_name]
        server_of_room = room_id.partition(":")[2]
        if server_of_room and server_of_room not in candidates:
            candidates.append(server_of_room)
        if not candidates:
            raise not_found("No known servers to knock on the room through")
        event = await self._remote.rooms.knock(room_id, user_id, candidates, content)
        knock_state = event.pdu.get("unsigned", {}).get("knock_room_state")
        await self._store_out_of_band(event, creator=_creator_in(knock_state) or user_id)
        return event

    async def _store_out_of_band(self, event: Event, creator: str | None = None) -> None:
        assert self._remote is not None
        try:
            await self._remote.out_of_band.store(event, creator)
        except OutOfBandRefused:
            # Our server joined the room while the handshake ran.
            raise forbidden("The room changed meanwhile: try again") from None

    async def set_membership(
        self,
        room_id: str,
        sender: str,
        target: str,
        membership: str,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Event:
        """Leave, kick, ban, unban (leave by another) and local invites."""
        content: dict[str, Any] = dict(extra or {})
        content["membership"] = membership
        if reason is not None:
            content["reason"] = reason
        version = await self._stores.rooms.get_room_version(room_id)
        if version is None:
            if membership == "leave" and sender == target:
                raise not_found("Unknown room")
            raise not_found("Unknown room")
        if membership == "invite":
            invited = await self.invite(room_id, sender, target, content)
            if invited is None:
                raise forbidden("Invites are not possible now")  # shadow-banned via this path
            return invited
        if membership == "leave" and sender == target and self._remote is not None:
            current = await self._stores.current_state.get_membership(room_id, target)
            if current in ("invite", "knock") and not await self._we_are_joined(room_id):
                # Rejecting a remote invite (or rescinding a knock): a resident server
                # must sign our leave; the inviter's server is the one we know of.
                servers = [*await self._inviter_server(room_id, target), room_id.partition(":")[2]]
                candidates = [s for s in dict.fromkeys(servers) if s and s != self._server_name]
                try:
                    event = await self._remote.rooms.leave(room_id, target, candidates)
                except MatrixError as e:
                    # No resident server would sign it (unreachable, gone, or refusing):
                    # reject on our side alone, as Synapse does, so the invite or knock
                    # never stays stuck in the user's /sync.
                    log.info("rejecting %s's %s in %s locally: %s", target, current, room_id, e)
                    event = await self._local_out_of_band_leave(room_id, target)
                await self._store_out_of_band(event)
                return event
        return await self._events.send(room_id, sender, "m.room.member", content, target)

    async def _local_out_of_band_leave(self, room_id: str, user_id: str) -> Event:
        info = await self._stores.current_state.get_membership_info(room_id, user_id)
        prior = None if info is None else await self._stores.events.get_event(info.event_id)
        if prior is None:
            raise not_found("No invite or knock to withdraw")
        return self._events.build_out_of_band_leave(prior)

    async def invite(
        self, room_id: str, sender: str, target: str, content: dict[str, Any]
    ) -> Event | None:
        """Invite `target`; None when the sender is shadow-banned (nothing is sent, the
        client is answered as if it had been)."""
        if self._moderation is not None:
            self._moderation.check_not_suspended(sender, "Sending invites")
            await self._moderation.check_room_not_blocked(room_id)
            if self._moderation.is_shadow_banned(sender):
                return None
        current = await self._stores.current_state.get_membership(room_id, target)
        if current == "ban":
            raise forbidden(f"{target} is banned from the room")
        if current == "join":
            raise forbidden(f"{target} is already in the room")
        await self.check_invite_allowed(target)
        # The invitee's profile goes into the invite (as Synapse's
        # include_profile_data_on_invite does), so their client and everyone's timeline
        # show a name before they join. The inviting client's own values win.
        profile = await self._invitee_profile(target)
        content = {**profile, **content, "membership": "invite"}
        if self._is_local(target) or self._remote is None:
            if not self._is_local(target):
                raise MatrixError(403, "M_FORBIDDEN", "Federation is not available")
            return await self._events.send(room_id, sender, "m.room.member", content, target)
        # Remote invitee: the event must be counter-signed by the invitee's server first.
        event = await self._events.build_only(room_id, sender, "m.room.member", content, target)
        state = await self.stripped_state_pdus(room_id, inviter=sender)
        signed = await self._remote.rooms.invite(event, state)
        return await self._events.persist_built(signed)

    async def _invitee_profile(self, user_id: str) -> dict[str, Any]:
        """displayname/avatar_url of the invitee: ours from the profile store, a remote
        user's by a profile query (bounded by the port; failures leave them out)."""
        if not self._invite_profiles:
            return {}
        if self._is_local(user_id):
            return await self.profile_content(user_id)
        if self._remote_profiles is None:
            return {}
        try:
            found = await asyncio.wait_for(
                self._remote_profiles.query_profile(user_id), INVITE_PROFILE_TIMEOUT_S
            )
        except Exception:  # a slow or broken remote server must not block the invite
            return {}
        if not isinstance(found, dict):
            return {}
        return {
            k: found[k]
            for k in ("displayname", "avatar_url")
            if isinstance(found.get(k), str) and len(found[k]) <= MAX_PROFILE_VALUE
        }

    async def _stripped_ids(self, room_id: str, inviter: str | None) -> list[str]:
        ids = await self._stores.current_state.get_current_state_ids(room_id)
        wanted: list[str] = []
        for event_type, state_key in self._prejoin:
            if state_key is not None:
                if (event_type, state_key) in ids:
                    wanted.append(ids[(event_type, state_key)])
            else:
                wanted += [e for (t, _), e in sorted(ids.items()) if t == event_type]
        # The create event always (the spec requires it since v1.16).
        create = ids.get(("m.room.create", ""))
        if create is not None and create not in wanted:
            wanted.insert(0, create)
        wanted = list(dict.fromkeys(wanted))[:MAX_STRIPPED_STATE]
        if inviter is not None and ("m.room.member", inviter) in ids:
            wanted.append(ids[("m.room.member", inviter)])
        return wanted

    async def stripped_state_pdus(
        self, room_id: str, inviter: str | None = None
    ) -> list[dict[str, Any]]:
        """The same state as `stripped_state`, as full PDUs: the federation form of
        `invite_room_state` / `knock_room_state` since v1.16 (the receiver may check
        them, and Synapse warns about anything else)."""
        wanted = await self._stripped_ids(room_id, inviter)
        events = await self._stores.events.get_events(wanted)
        return [
            {k: v for k, v in events[eid].pdu.items() if k != "unsigned"}
            for eid in wanted
            if eid in events
        ]

    async def stripped_state(
        self, room_id: str, inviter: str | None = None
    ) -> list[dict[str, Any]]:
        """The stripped state shown with invites and knocks (includes the create event);
        with `inviter`, also the inviter's member event (their name and avatar, which
        clients show as "X invited you" instead of a bare user ID, as Synapse does)."""
        wanted = await self._stripped_ids(room_id, inviter)
        events = await self._stores.events.get_events(wanted)
        out = []
        for eid in wanted:
            ev = events.get(eid)
            if ev is None:
                continue
            item: dict[str, Any] = {
                "type": ev.type,
                "state_key": ev.state_key,
                "content": ev.content,
                "sender": ev.sender,
            }
            if ev.type == "m.room.create":
                item["event_id"] = ev.event_id
                item["origin_server_ts"] = ev.origin_server_ts
                item["room_id"] = ev.room_id
            out.append(item)
        return out


def _creator_in(state: Any) -> str | None:
    """The sender of the create event among (stripped or full) room state items."""
    for item in state if isinstance(state, list) else []:
        if isinstance(item, dict) and item.get("type") == "m.room.create":
            sender = item.get("sender")
            return sender if isinstance(sender, str) else None
    return None
