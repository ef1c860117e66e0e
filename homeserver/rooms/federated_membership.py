"""Membership requests from other servers: the policy half of the federation API.

The federation routes parse the request, authenticate the origin (X-Matrix, ACLs, the
user belongs to the origin) and run the receiving checks 1-3 on any event; everything
else is decided here, by the room service:

- make_join / make_leave / make_knock: an unsigned template built on our current state,
  auth-checked (403 when the user may not do it); 404 unless our server is in the room.
  Restricted joins get a local authoriser in the template (`RestrictedJoins`).
- send_join / send_leave / send_knock: the signed event goes through
  `RemoteEventIngest.accept_membership` (checks 4-6, refused rather than stored when it
  fails any, current state included); send_join answers with the state before it.
- invites of our users: refused for users who do not exist or are already joined, for
  rooms an admin blocked (as Synapse does) and for unknown rooms that claim to be ours;
  counter-signed otherwise. In a room our
  server is in, the invite is received like any event of the room (so a server with no
  user there cannot invite anyone); in other rooms it is stored out of band.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import Event, RoomVersion, get_room_version
from homeserver.events.signing import sign_event
from homeserver.moderation import Moderation
from homeserver.storage import Stores

from .client_events import strip_state_items
from .ingest import Outcome, RemoteEventIngest, StateMap
from .local_events import LocalEvents
from .membership import MembershipService
from .out_of_band import OutOfBandMemberships, OutOfBandRefused
from .restricted_joins import RestrictedJoins

log = logging.getLogger(__name__)

AUTHORISER = "join_authorised_via_users_server"
MAX_HEROES = 5


class FederatedMembership:
    def __init__(
        self,
        stores: Stores,
        local_events: LocalEvents,
        membership: MembershipService,
        ingest: RemoteEventIngest,
        out_of_band: OutOfBandMemberships,
        restricted: RestrictedJoins,
        server_name: str,
        signing_key: Any,
        moderation: Moderation | None = None,
    ) -> None:
        self._stores = stores
        # Admin decisions: no invites into a blocked room. None: no moderation.
        self._moderation = moderation
        self._events = local_events
        self._membership = membership
        self._ingest = ingest
        self._out_of_band = out_of_band
        self._restricted = restricted
        self._server_name = server_name
        self._signing_key = signing_key

    async def _resident_version(self, room_id: str) -> RoomVersion:
        """The room's version; 404 unless our server is in the room (by current state)."""
        version = await self._stores.rooms.get_room_version(room_id)
        if version is None or not await self._out_of_band.server_joined(room_id):
            raise not_found("We are not in this room")
        return get_room_version(version)

    # -- make_* -----------------------------------------------------------------------------

    async def make(
        self, room_id: str, user_id: str, membership: str, supported_versions: list[str]
    ) -> tuple[RoomVersion, dict[str, Any]]:
        """(room version, unsigned template) for a remote user's join/leave/knock."""
        version = await self._resident_version(room_id)
        if membership in ("join", "knock") and version.identifier not in supported_versions:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                "Your homeserver does not support the features required to join this room",
                room_version=version.identifier,
            )
        if membership == "knock" and not version.knock_join_rule:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                "This room version does not support knocking",
                room_version=version.identifier,
            )
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            authoriser = await self._restricted.authoriser(room_id, user_id, version)
            if authoriser is not None:
                content[AUTHORISER] = authoriser
        template = await self._events.build_template(
            room_id, user_id, "m.room.member", content, user_id
        )
        return version, template

    # -- send_* -----------------------------------------------------------------------------

    async def resident_version(self, room_id: str, membership: str) -> RoomVersion:
        """The version to parse a send_<membership> event with (404 unless resident)."""
        version = await self._resident_version(room_id)
        if membership == "knock" and not version.knock_join_rule:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                "No knocking here",
                room_version=version.identifier,
            )
        return version

    async def countersign_restricted_join(
        self, version: RoomVersion, pdu: dict[str, Any]
    ) -> dict[str, Any]:
        """A send_join event naming one of our users as its authoriser gets our signature,
        if the joiner still meets an `allow` condition (make_join checked it once; the
        membership may have changed since). Other events come back unchanged."""
        content = pdu.get("content")
        authoriser = content.get(AUTHORISER) if isinstance(content, dict) else None
        if not isinstance(authoriser, str) or authoriser.partition(":")[2] != self._server_name:
            return pdu
        if not version.restricted_join_rule:
            raise MatrixError(400, "M_BAD_JSON", f"{AUTHORISER} in a room version without it")
        room_id, state_key = pdu.get("room_id"), pdu.get("state_key")
        if not isinstance(room_id, str) or not isinstance(state_key, str):
            raise MatrixError(400, "M_BAD_JSON", "Malformed join event")
        await self._restricted.authoriser(room_id, state_key, version)
        signed = dict(pdu)
        signed["signatures"] = {k: dict(v) for k, v in (pdu.get("signatures") or {}).items()}
        sign_event(signed, version, self._server_name, self._signing_key)
        return signed

    async def send_join(self, event: Event, *, omit_members: bool) -> dict[str, Any]:
        """Accept a remote user's join; the send_join answer (state before the join, its
        auth chain, the servers that were in the room)."""
        room_id = event.room_id
        servers_before = sorted(await self._stores.current_state.get_joined_hosts(room_id))
        state_before = await self._ingest.accept_membership(event)
        state_ids = dict(state_before)
        if omit_members:
            keep = await self._hero_member_keys(state_before, event.state_key or "")
            state_ids = {
                k: v for k, v in state_before.items() if k[0] != "m.room.member" or k in keep
            }
        chain = await self._stores.events.get_auth_chain_ids([*state_ids.values(), event.event_id])
        if omit_members:
            chain -= set(state_ids.values())
        return {
            "origin": self._server_name,
            "event": event.pdu,
            "state": await self._pdus(sorted(state_ids.values())),
            "auth_chain": await self._pdus(sorted(chain)),
            "members_omitted": omit_members,
            "servers_in_room": servers_before,
        }

    async def send_leave(self, event: Event) -> None:
        await self._ingest.accept_membership(event)

    async def send_knock(self, event: Event) -> list[dict[str, Any]]:
        """Accept a remote user's knock; the room's stripped state for the knocker."""
        await self._ingest.accept_membership(event)
        return await self._membership.stripped_state_pdus(event.room_id)

    async def _pdus(self, event_ids: list[str]) -> list[dict[str, Any]]:
        events = await self._stores.events.get_events(event_ids)
        return [events[e].pdu for e in event_ids if e in events]

    async def _hero_member_keys(self, state: StateMap, joiner: str) -> set[tuple[str, str]]:
        """Member state keys to keep with omit_members: the joiner's own, and the room's
        heroes (up to 5 joined/invited members) when it has neither a name nor an alias."""
        keep = {("m.room.member", joiner)}
        if ("m.room.name", "") in state or ("m.room.canonical_alias", "") in state:
            return keep
        member_ids = {k: v for k, v in state.items() if k[0] == "m.room.member" and k[1] != joiner}
        events = await self._stores.events.get_events(member_ids.values())
        heroes = sorted(
            k
            for k, eid in member_ids.items()
            if eid in events and events[eid].membership in ("join", "invite")
        )[:MAX_HEROES]
        return keep | set(heroes)

    # -- invites of our users ---------------------------------------------------------------

    async def receive_invite(
        self, event: Event, invite_room_state: list[Any], origin: str
    ) -> dict[str, Any]:
        """Check, counter-sign and record an invite of one of our users (checks 1-3 done
        by the caller); the counter-signed event."""
        room_id, invitee = event.room_id, event.state_key or ""
        if invitee.partition(":")[2] != self._server_name or (
            await self._stores.accounts.get_user(invitee) is None
        ):
            raise not_found("The invited user does not exist here")
        if self._moderation is not None:
            await self._moderation.check_room_not_blocked(room_id)
        await self._membership.check_invite_allowed(invitee)
        known = await self._stores.rooms.get_room_version(room_id) is not None
        if not known and self._claims_our_namespace(room_id, invite_room_state):
            raise forbidden("This room would be ours, but there is no such room here")
        pdu = {k: v for k, v in event.pdu.items() if k != "unsigned"}
        pdu["signatures"] = {k: dict(v) for k, v in (pdu.get("signatures") or {}).items()}
        sign_event(pdu, event.room_version, self._server_name, self._signing_key)
        signed = Event(pdu, event.room_version, event.event_id)
        if known and await self._out_of_band.server_joined(room_id):
            await self._receive_in_room(signed, invitee, origin)
            return {"event": pdu}
        stored = dict(pdu)
        stored["unsigned"] = {"invite_room_state": strip_state_items(invite_room_state)}
        try:
            await self._out_of_band.store(
                Event(stored, event.room_version, event.event_id),
                creator=_creator_of(invite_room_state) or event.sender,
            )
        except OutOfBandRefused:  # our server joined the room meanwhile
            await self._receive_in_room(signed, invitee, origin)
        return {"event": pdu}

    async def _receive_in_room(self, event: Event, invitee: str, origin: str) -> None:
        """An invite into a room our server is in: the room's current state decides."""
        current = await self._stores.current_state.get_membership(event.room_id, invitee)
        if current == "join":
            raise forbidden(f"{invitee} is already in the room")
        result = await self._ingest.receive(event, origin)
        if result.outcome in (Outcome.REJECTED, Outcome.SOFT_FAILED):
            raise forbidden(f"The invite is not allowed in this room: {result.reason}")

    def _claims_our_namespace(self, room_id: str, invite_room_state: list[Any]) -> bool:
        """A room ID on our server, or (room v12 IDs name no server) a create event sent
        by one of our users: a room we would know if it existed."""
        if room_id.partition(":")[2] == self._server_name:
            return True
        creator = _creator_of(invite_room_state)
        return creator is not None and creator.partition(":")[2] == self._server_name


def _creator_of(stripped: list[Any]) -> str | None:
    """The sender of the create event among (stripped or full) room state items."""
    for item in stripped:
        if isinstance(item, dict) and item.get("type") == "m.room.create":
            sender = item.get("sender")
            if isinstance(sender, str):
                return sender
    return None
