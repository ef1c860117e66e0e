"""Third-party (email, phone) invites, the homeserver's part (client-server "Third-party
invites", server-server "Third-party invites").

Inviting `medium`/`address` through an identity server:
- bound to a Matrix ID: an ordinary invite of that user;
- not bound: the identity server stores the invite and answers a token and public
  keys, which we publish in an `m.room.third_party_invite` state event (state key: the
  token).

Redeeming: when the address gets bound, the identity server calls the invitee's
homeserver (`/3pid/onbind`) with a `signed` block per invite ({mxid, token} signed with
the invite's key). The invitee's server turns each into an `m.room.member` invite whose
sender is the original inviter: it creates the event itself when the inviter is its own
user, otherwise it asks the inviter's server (`/exchange_third_party_invite`). The
inviter's server checks the `signed` block against the keys in the room's
`m.room.third_party_invite` event and that the identity server still vouches for the
key (a revoked key redeems nothing) before the invite goes out; the auth rules check
the signature again on every server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from homeserver.accounts.identity import IdentityServerError, IdentityServers
from homeserver.errors import MatrixError, forbidden
from homeserver.events import Event
from homeserver.graph.third_party_invite import public_key_bytes, signed_block_is_valid
from homeserver.storage import Stores

from .local_events import LocalEvents
from .membership import MembershipService

log = logging.getLogger(__name__)

THIRD_PARTY_INVITE = "m.room.third_party_invite"
# Invites one /3pid/onbind call may redeem (the identity server lists each pending one).
MAX_INVITES_PER_BIND = 50
MAX_ADDRESS_LENGTH = 512


class InviteExchange(Protocol):
    """Asks another server (the inviter's, or the room's) to create the invite event
    for a redeemed third-party invite (federation `/exchange_third_party_invite`)."""

    async def exchange_third_party_invite(
        self, destinations: Iterable[str], room_id: str, event_dict: dict[str, Any]
    ) -> None: ...


def identity_error(e: IdentityServerError) -> MatrixError:
    log.info("identity server: %s", e)
    return MatrixError(502, "M_UNKNOWN", "The identity server could not be used")


class ThirdPartyInvites:
    def __init__(
        self,
        stores: Stores,
        membership: MembershipService,
        events: LocalEvents,
        identity: IdentityServers,
        server_name: str,
        exchange: InviteExchange | None,
    ) -> None:
        self._stores = stores
        self._membership = membership
        self._events = events
        self._identity = identity
        self._server_name = server_name
        self._exchange = exchange

    def _is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self._server_name

    # -- inviting ---------------------------------------------------------------------------

    async def invite(
        self,
        room_id: str,
        sender: str,
        *,
        id_server: str,
        id_access_token: str,
        medium: str,
        address: str,
    ) -> None:
        """Invite a 3PID: the user it is bound to, or a stored invite for it."""
        try:
            mxid = await self._identity.lookup(id_server, id_access_token, medium, address)
        except IdentityServerError as e:
            raise identity_error(e) from None
        if mxid is not None:
            invited = await self._membership.invite(room_id, sender, mxid, {})
            if invited is None:
                raise forbidden("Invites are not possible now")
            return
        invite = await self._store_invite_body(room_id, sender, medium, address)
        try:
            answer = await self._identity.store_invite(id_server, id_access_token, invite)
        except IdentityServerError as e:
            raise identity_error(e) from None
        public_keys = [
            {k: key[k] for k in ("public_key", "key_validity_url") if k in key}
            for key in answer["public_keys"][:10]
        ]
        fallback = public_keys[0]
        if isinstance(answer.get("public_key"), str):
            fallback = {"public_key": answer["public_key"]}
        content: dict[str, Any] = {
            "display_name": str(answer.get("display_name") or "")[:256],
            "public_keys": public_keys,
            "public_key": fallback["public_key"],
        }
        if "key_validity_url" in fallback:
            content["key_validity_url"] = fallback["key_validity_url"]
        await self._events.send(room_id, sender, THIRD_PARTY_INVITE, content, answer["token"])

    async def _store_invite_body(
        self, room_id: str, sender: str, medium: str, address: str
    ) -> dict[str, Any]:
        """What the identity server shows in its invitation (email) to the address."""

        async def content(event_type: str, state_key: str = "") -> dict[str, Any]:
            event_id = await self._stores.current_state.get_current_state_event_id(
                room_id, event_type, state_key
            )
            event = None if event_id is None else await self._stores.events.get_event(event_id)
            return dict(event.content) if event is not None else {}

        member = await content("m.room.member", sender)
        body: dict[str, Any] = {
            "medium": medium,
            "address": address,
            "room_id": room_id,
            "sender": sender,
            "sender_display_name": member.get("displayname") or sender,
            "sender_avatar_url": member.get("avatar_url") or "",
            "room_alias": (await content("m.room.canonical_alias")).get("alias") or "",
            "room_avatar_url": (await content("m.room.avatar")).get("url") or "",
            "room_join_rules": (await content("m.room.join_rules")).get("join_rule") or "",
            "room_name": (await content("m.room.name")).get("name") or "",
        }
        room_type = (await content("m.room.create")).get("type")
        if isinstance(room_type, str):
            body["room_type"] = room_type
        return {k: v for k, v in body.items() if isinstance(v, str)}

    # -- redeeming --------------------------------------------------------------------------

    async def on_bind(self, body: dict[str, Any]) -> int:
        """`/3pid/onbind` from an identity server: redeem each invite for our user.
        Anyone may call it, so nothing here is trusted: every invite is checked against
        the keys in its room before anything is created. Returns how many went out."""
        invites = body.get("invites")
        if not isinstance(invites, list):
            raise MatrixError(400, "M_MISSING_PARAM", "Missing invites")
        done = 0
        for invite in invites[:MAX_INVITES_PER_BIND]:
            if not isinstance(invite, dict):
                continue
            mxid, room_id, sender = invite.get("mxid"), invite.get("room_id"), invite.get("sender")
            signed = invite.get("signed")
            if not (isinstance(mxid, str) and isinstance(room_id, str) and isinstance(sender, str)):
                continue
            if not isinstance(signed, dict) or not self._is_local(mxid):
                continue
            try:
                await self.exchange(room_id, sender, mxid, signed)
                done += 1
            except MatrixError as e:
                log.info("3PID invite of %s to %s not redeemed: %s", mxid, room_id, e.message)
        return done

    async def exchange(self, room_id: str, sender: str, target: str, signed: dict) -> None:
        """Turn a redeemed 3PID invite into the invite event: ourselves when the
        inviter is ours, else through the inviter's (or the room's) server."""
        if self._is_local(sender):
            await self.redeem(room_id, sender, target, signed)
            return
        if self._exchange is None:
            raise MatrixError(403, "M_FORBIDDEN", "Federation is not available")
        event_dict = {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": sender,
            "state_key": target,
            "content": {"membership": "invite", "third_party_invite": {"signed": signed}},
        }
        destinations = [sender.partition(":")[2]]
        room_server = room_id.partition(":")[2]
        if room_server and room_server not in destinations:
            destinations.append(room_server)
        await self._exchange.exchange_third_party_invite(destinations, room_id, event_dict)

    async def redeem(self, room_id: str, sender: str, target: str, signed: Any) -> Event:
        """The inviter's side: check `signed` against the room's third-party invite and
        send the invite event as its original sender (one of our users)."""
        if not self._is_local(sender):
            raise forbidden("The inviter is not a user of this server")
        if not isinstance(signed, dict) or signed.get("mxid") != target:
            raise forbidden("The signed block does not name the invitee")
        token = signed.get("token")
        if not isinstance(token, str):
            raise forbidden("The signed block has no token")
        event_id = await self._stores.current_state.get_current_state_event_id(
            room_id, THIRD_PARTY_INVITE, token
        )
        tpi = None if event_id is None else await self._stores.events.get_event(event_id)
        if tpi is None or not tpi.content:
            raise forbidden("Could not find invite")
        if tpi.sender != sender:
            raise forbidden("The third-party invite was sent by someone else")
        await self._check_keys(tpi, signed)
        content = {
            "third_party_invite": {
                "display_name": tpi.content.get("display_name"),
                "signed": signed,
            }
        }
        invited = await self._membership.invite(room_id, sender, target, content)
        if invited is None:
            raise forbidden("Invites are not possible now")
        return invited

    async def _check_keys(self, tpi: Event, signed: dict[str, Any]) -> None:
        """A key of the invite signed the block, and its identity server still says
        the key is valid."""
        entries: list[dict[str, Any]] = [dict(tpi.content)]
        public_keys = tpi.content.get("public_keys")
        if isinstance(public_keys, list):
            entries += [k for k in public_keys[:10] if isinstance(k, dict)]
        for entry in entries:
            key = public_key_bytes(entry.get("public_key"))
            if key is None or not signed_block_is_valid(signed, [key]):
                continue
            url = entry.get("key_validity_url")
            valid = not (isinstance(url, str) and url) or await self._identity.key_is_valid(
                url, entry["public_key"]
            )
            if not valid:
                raise forbidden("Third party certificate was invalid")
            return
        raise forbidden("No public key of the invite signed it")
