"""Membership handshakes with other servers: homeserver.rooms.ports.RemoteRooms.

- join: `make_join` (each candidate server in turn, offering every room version we
  support) -> our join event built from the template (its prev/auth events and depth
  kept; origin_server_ts, hashes and our signature added) -> `v2/send_join` (full state:
  omit_members=false) -> the returned state and auth chain pass checks 1-3 -> the room
  service's `accept` persists them and our join, or refuses (RefusedAnswer) and the
  next server is tried.
- invite: `v2/invite` to the invitee's server, which returns the event counter-signed.
- leave (rejecting an invite to a room we are not in): make_leave / v2/send_leave.
- knock: make_knock / send_knock.

Nothing here writes to storage: the room service persists what comes back.
"""

from __future__ import annotations

import copy
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from federation.client import FederationError, fed_path
from federation.inbound import InboundChecks, PduRejected
from homeserver.errors import MatrixError
from homeserver.events import KNOWN_ROOM_VERSIONS, Event, RoomVersion, get_room_version
from homeserver.events.hashing import add_content_hash
from homeserver.events.redaction import redact
from homeserver.events.signing import sign_event
from homeserver.events.validation import EventFormatError, validate_pdu_format
from homeserver.rooms.client_events import strip_state_items
from homeserver.rooms.ports import AcceptJoin, JoinAnswer, RefusedAnswer

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 60.0
SEND_JOIN_TIMEOUT_S = 120.0
# Template fields a resident server may set that we must not carry into our event.
_DROPPED_TEMPLATE_KEYS = ("signatures", "hashes", "unsigned", "origin")


_VERSION_ERRCODES = ("M_INCOMPATIBLE_ROOM_VERSION", "M_UNSUPPORTED_ROOM_VERSION")


def _unknown_endpoint(e: FederationError) -> bool:
    """The peer does not know the v2 endpoint (an older server): fall back to v1, as
    Synapse does. 404/405 without a Matrix errcode or with M_UNRECOGNIZED, or 400
    M_UNRECOGNIZED; anything else is a real answer."""
    if e.status in (404, 405):
        return e.errcode in (None, "M_UNRECOGNIZED")
    return e.status == 400 and e.errcode == "M_UNRECOGNIZED"


def _v1_answer(body: Any) -> Any:
    """The v1 membership endpoints answer `[200, {...}]`."""
    if isinstance(body, list) and len(body) == 2 and isinstance(body[1], dict):
        return body[1]
    raise HandshakeError("v1 answer is not [200, {...}]")


class FederationRemoteRooms:
    """RemoteRooms over federation; `signing_key` is our current key (SERVER_KEYS.primary)."""

    def __init__(
        self,
        client: Any,
        checks: InboundChecks,
        server_name: str,
        signing_key: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._checks = checks
        self._server_name = server_name
        self._signing_key = signing_key
        self._clock = clock

    # -- third-party invites ----------------------------------------------------------------

    async def exchange_third_party_invite(
        self, destinations: Iterable[str], room_id: str, event_dict: dict[str, Any]
    ) -> None:
        """Ask the inviter's (or the room's) server to create the invite event of a
        redeemed 3PID invite (rooms.third_party_invites.InviteExchange)."""
        path = fed_path("/_matrix/federation/v1/exchange_third_party_invite/{}", room_id)
        last: FederationError | None = None
        for destination in destinations:
            if destination == self._server_name:
                continue
            try:
                await self._client.put_json(
                    destination, path, event_dict, timeout=HANDSHAKE_TIMEOUT_S
                )
                return
            except FederationError as e:
                log.info("exchange_third_party_invite via %s failed: %s", destination, e)
                last = e
        if last is not None and last.status == 403:
            raise MatrixError(403, "M_FORBIDDEN", _peer_message(last) or "Invite refused")
        raise MatrixError(502, "M_UNKNOWN", "Failed to forward third party invite")

    # -- join -------------------------------------------------------------------------------

    async def join(
        self,
        room_id: str,
        user_id: str,
        servers: list[str],
        content: dict[str, Any],
        accept: AcceptJoin,
    ) -> Event:
        errors: list[str] = []
        last: Exception | None = None
        for server in _candidates(servers, self._server_name):
            try:
                return await self._join_via(server, room_id, user_id, content, accept)
            except (FederationError, HandshakeError, RefusedAnswer) as e:
                log.info("join of %s to %s via %s failed: %s", user_id, room_id, server, e)
                errors.append(f"{server}: {e}")
                last = e
                if isinstance(e, FederationError) and e.errcode in _VERSION_ERRCODES:
                    # As Synapse: the room's version is one we cannot join; no other
                    # server will say otherwise, and the client must learn why.
                    extra = e.body.get("room_version") if isinstance(e.body, dict) else None
                    raise MatrixError(
                        400,
                        e.errcode,
                        _peer_message(e) or "Cannot join a room of that version",
                        **({"room_version": extra} if isinstance(extra, str) else {}),
                    ) from None
                if isinstance(e, FederationError) and e.status == 403:
                    continue
        if isinstance(last, FederationError) and last.status in (403, 404):
            raise MatrixError(
                last.status,
                last.errcode or ("M_FORBIDDEN" if last.status == 403 else "M_NOT_FOUND"),
                _peer_message(last) or "Could not join the room",
            )
        raise MatrixError(
            404, "M_NOT_FOUND", "No server could help us join the room: " + "; ".join(errors)
        )

    async def _join_via(
        self, server: str, room_id: str, user_id: str, content: dict[str, Any], accept: AcceptJoin
    ) -> Event:
        template, version = await self._make("join", server, room_id, user_id, versions=True)
        event = self._build_from_template(template, version, room_id, user_id, "join", content)
        try:
            body = await self._client.put_json(
                server,
                fed_path("/_matrix/federation/v2/send_join/{}/{}", room_id, event.event_id),
                event.pdu,
                query={"omit_members": "false"},
                timeout=SEND_JOIN_TIMEOUT_S,
            )
        except FederationError as e:
            if not _unknown_endpoint(e):
                raise
            body = _v1_answer(
                await self._client.put_json(
                    server,
                    fed_path("/_matrix/federation/v1/send_join/{}/{}", room_id, event.event_id),
                    event.pdu,
                    timeout=SEND_JOIN_TIMEOUT_S,
                )
            )
        if not isinstance(body, dict):
            raise HandshakeError("send_join answer is not an object")
        # Restricted joins come back counter-signed by the authorising server.
        returned = body.get("event")
        if isinstance(returned, dict):
            try:
                signed = await self._checks.check_pdu(returned, version)
            except PduRejected as e:
                raise HandshakeError(f"the counter-signed join is invalid: {e}") from None
            if signed.event_id == event.event_id:
                event = signed
        state = await self._checked(body.get("state"), room_id, version, server)
        auth_chain = await self._checked(body.get("auth_chain"), room_id, version, server)
        await accept(JoinAnswer(event, state, auth_chain))
        return event

    async def _checked(
        self, pdus: Any, room_id: str, version: RoomVersion, server: str
    ) -> list[Event]:
        if not isinstance(pdus, list):
            raise HandshakeError("send_join answer lacks state / auth_chain lists")
        out = []
        for pdu in pdus:
            try:
                event = await self._checks.check_pdu(pdu, version)
            except PduRejected as e:
                log.info("send_join from %s: dropping a PDU: %s", server, e)
                continue
            if event.room_id == room_id:
                out.append(event)
        return out

    # -- leave / knock ----------------------------------------------------------------------

    async def leave(self, room_id: str, user_id: str, servers: list[str]) -> Event:
        errors: list[str] = []
        for server in _candidates(servers, self._server_name):
            try:
                template, version = await self._make("leave", server, room_id, user_id)
                event = self._build_from_template(template, version, room_id, user_id, "leave", {})
                try:
                    await self._client.put_json(
                        server,
                        fed_path(
                            "/_matrix/federation/v2/send_leave/{}/{}", room_id, event.event_id
                        ),
                        event.pdu,
                        timeout=HANDSHAKE_TIMEOUT_S,
                    )
                except FederationError as e:
                    if not _unknown_endpoint(e):
                        raise
                    await self._client.put_json(
                        server,
                        fed_path(
                            "/_matrix/federation/v1/send_leave/{}/{}", room_id, event.event_id
                        ),
                        event.pdu,
                        timeout=HANDSHAKE_TIMEOUT_S,
                    )
            except (FederationError, HandshakeError) as e:
                errors.append(f"{server}: {e}")
                continue
            return event
        raise MatrixError(
            502, "M_UNKNOWN", "Could not reach a server to leave through: " + "; ".join(errors)
        )

    async def knock(
        self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]
    ) -> Event:
        errors: list[str] = []
        last: FederationError | None = None
        for server in _candidates(servers, self._server_name):
            try:
                template, version = await self._make("knock", server, room_id, user_id, True)
                event = self._build_from_template(
                    template, version, room_id, user_id, "knock", content
                )
                body = await self._client.put_json(
                    server,
                    fed_path("/_matrix/federation/v1/send_knock/{}/{}", room_id, event.event_id),
                    event.pdu,
                    timeout=HANDSHAKE_TIMEOUT_S,
                )
            except (FederationError, HandshakeError) as e:
                errors.append(f"{server}: {e}")
                if isinstance(e, FederationError):
                    last = e
                continue
            state = body.get("knock_room_state") if isinstance(body, dict) else None
            if isinstance(state, list):
                pdu = copy.deepcopy(event.pdu)
                pdu.setdefault("unsigned", {})["knock_room_state"] = strip_state_items(state)
                event = Event(pdu, event.room_version, event.event_id)
            return event
        if last is not None and last.status == 403:
            raise MatrixError(403, last.errcode or "M_FORBIDDEN", _peer_message(last) or "Denied")
        raise MatrixError(404, "M_NOT_FOUND", "Could not knock: " + "; ".join(errors))

    # -- invite -----------------------------------------------------------------------------

    async def invite(self, event: Event, invite_room_state: list[dict[str, Any]]) -> Event:
        target = event.state_key or ""
        server = target.partition(":")[2]
        version = event.room_version
        try:
            try:
                body = await self._client.put_json(
                    server,
                    fed_path("/_matrix/federation/v2/invite/{}/{}", event.room_id, event.event_id),
                    {
                        "event": event.pdu,
                        "room_version": version.identifier,
                        "invite_room_state": invite_room_state,
                    },
                    timeout=HANDSHAKE_TIMEOUT_S,
                )
            except FederationError as e:
                if not _unknown_endpoint(e):
                    raise
                if version.identifier not in ("1", "2"):
                    raise MatrixError(
                        400,
                        "M_UNSUPPORTED_ROOM_VERSION",
                        "The invitee's server does not support this room version",
                    ) from None
                # v1 (rooms v1/v2 only): the body is the event, the stripped state in
                # its unsigned; the answer is [200, {"event": ...}].
                v1_pdu = {**event.pdu, "unsigned": {"invite_room_state": invite_room_state}}
                body = _v1_answer(
                    await self._client.put_json(
                        server,
                        fed_path(
                            "/_matrix/federation/v1/invite/{}/{}", event.room_id, event.event_id
                        ),
                        v1_pdu,
                        timeout=HANDSHAKE_TIMEOUT_S,
                    )
                )
        except FederationError as e:
            status = e.status if e.status in (400, 403, 404) else 502
            raise MatrixError(
                status, e.errcode or "M_UNKNOWN", _peer_message(e) or f"Invite failed: {e}"
            ) from None
        signed = body.get("event") if isinstance(body, dict) else None
        if not isinstance(signed, dict):
            raise MatrixError(502, "M_UNKNOWN", "The invitee's server sent no signed event")
        try:
            checked = await self._checks.check_pdu(signed, version)
            if checked.event_id != event.event_id:
                raise PduRejected("the counter-signed invite is a different event")
            redacted = _signable(checked)
            await self._checks.keyring.verify_json_for_server(
                server, redacted, checked.origin_server_ts if version.enforce_key_validity else None
            )
        except Exception as e:  # PduRejected, KeyringError: the invitee did not vouch
            raise MatrixError(502, "M_UNKNOWN", f"Invalid counter-signed invite: {e}") from None
        pdu = copy.deepcopy(checked.pdu)
        if invite_room_state:
            pdu.setdefault("unsigned", {})["invite_room_state"] = strip_state_items(
                invite_room_state
            )
        return Event(pdu, version, event.event_id)

    # -- building our half ------------------------------------------------------------------

    async def _make(
        self, kind: str, server: str, room_id: str, user_id: str, versions: bool = False
    ) -> tuple[dict[str, Any], RoomVersion]:
        query = {"ver": list(KNOWN_ROOM_VERSIONS)} if versions else None
        body = await self._client.get_json(
            server,
            fed_path(f"/_matrix/federation/v1/make_{kind}/{{}}/{{}}", room_id, user_id),
            query=query,
            timeout=HANDSHAKE_TIMEOUT_S,
        )
        if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
            raise HandshakeError(f"make_{kind} answer has no event template")
        ver = body.get("room_version", "1")
        if not isinstance(ver, str) or ver not in KNOWN_ROOM_VERSIONS:
            raise HandshakeError(f"unsupported room version {ver!r}")
        return body["event"], get_room_version(ver)

    def _build_from_template(
        self,
        template: dict[str, Any],
        version: RoomVersion,
        room_id: str,
        user_id: str,
        membership: str,
        content: dict[str, Any],
    ) -> Event:
        """Our membership event: the template's graph position, our content and signature."""
        if (
            template.get("type") != "m.room.member"
            or template.get("room_id") != room_id
            or template.get("sender") != user_id
            or template.get("state_key") != user_id
        ):
            raise HandshakeError("the event template is not our membership event")
        pdu = {k: v for k, v in template.items() if k not in _DROPPED_TEMPLATE_KEYS}
        template_content = template.get("content")
        merged = dict(template_content) if isinstance(template_content, dict) else {}
        merged.update(content)
        merged["membership"] = membership
        pdu["content"] = merged
        pdu["origin_server_ts"] = int(self._clock() * 1000)
        if version.event_id_in_event:
            pdu["event_id"] = f"${secrets.token_urlsafe(12)}:{self._server_name}"
        else:
            pdu.pop("event_id", None)
        add_content_hash(pdu)
        sign_event(pdu, version, self._server_name, self._signing_key)
        try:
            validate_pdu_format(pdu, version)
        except EventFormatError as e:
            raise HandshakeError(f"the event template gives an invalid event: {e}") from None
        return Event(pdu, version)


class HandshakeError(Exception):
    """A peer's answer during a membership handshake was unusable."""


def _candidates(servers: Iterable[str], ourselves: str) -> list[str]:
    return [s for s in dict.fromkeys(servers) if s and s != ourselves]


def _peer_message(e: FederationError) -> str | None:
    if isinstance(e.body, dict) and isinstance(e.body.get("error"), str):
        return e.body["error"]
    return None


def _signable(event: Event) -> dict[str, Any]:
    out = redact(event.pdu, event.room_version)
    out.pop("unsigned", None)
    return out
