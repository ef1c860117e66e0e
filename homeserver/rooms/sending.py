"""What clients write into rooms: messages, state, redactions.

Thin policy on top of `LocalEvents.send` (which builds, authorises and persists):
the sender must be joined, a repeated client transaction returns the first event,
a state PUT that changes nothing returns the current event instead of a duplicate,
and a redaction is only accepted from the original sender or someone with the
room's `redact` power level. The persister records accepted redactions on their target
(`rooms.redactions`) so every later read shows the pruned event.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.events import Event
from homeserver.graph.power_levels import PowerLevels
from homeserver.ids import validate_room_alias
from homeserver.moderation import Moderation, suspended_error
from homeserver.profiles.policy import ProfilePolicy
from homeserver.storage import Stores
from homeserver.storage.room_directory import RoomReadStore

from .local_events import LocalEvents

Txn = tuple[str, str | None, str]


def fake_event_id() -> str:
    """What a shadow-banned user is told their event got (it was never sent)."""
    return "$" + secrets.token_urlsafe(32)


class RoomSender:
    def __init__(
        self,
        stores: Stores,
        read_store: RoomReadStore,
        events: LocalEvents,
        moderation: Moderation | None = None,
        check_invite: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._stores = stores
        self._read = read_store
        self._events = events
        self._moderation = moderation
        # MembershipService.check_invite_allowed: an invite sent as a state event is
        # refused like one sent with /invite (v1.18 invite permission).
        self._check_invite = check_invite
        # The operator's profile rules for a user's own member event (per-room profiles,
        # avatar limits); set by the composition.
        self.profile_policy: ProfilePolicy | None = None

    def _silenced(self, user_id: str, event_type: str, content: dict[str, Any]) -> bool:
        """Suspended users may only leave (403 M_USER_SUSPENDED for the rest); True when
        the user is shadow-banned and the event must be dropped silently."""
        if self._moderation is None:
            return False
        if self._moderation.is_suspended(user_id):
            leaving = event_type == "m.room.member" and content.get("membership") == "leave"
            if not leaving:
                raise suspended_error(
                    "Sending events while the account is suspended is not allowed"
                )
        return self._moderation.is_shadow_banned(user_id)

    async def _require_joined(self, room_id: str, user_id: str) -> None:
        if not await self._stores.current_state.is_joined(room_id, user_id):
            raise forbidden(f"User {user_id} not in room {room_id}")

    async def _existing_txn(self, txn: Txn | None) -> Event | None:
        if txn is None:
            return None
        event_id = await self._stores.transactions.get_client_txn(*txn)
        return await self._stores.events.get_event(event_id) if event_id else None

    async def send_message(
        self,
        room_id: str,
        user_id: str,
        event_type: str,
        content: dict[str, Any],
        txn: Txn,
        ts: int | None = None,
    ) -> str:
        """Send a non-state event; idempotent per (user, device, txn_id) (LocalEvents
        answers a repeated txn with the event it already sent)."""
        if event_type == "m.room.redaction":
            target = content.get("redacts")
            if not isinstance(target, str):
                raise MatrixError(400, "M_BAD_JSON", "m.room.redaction needs content.redacts")
            reason = content.get("reason")
            return await self.redact(
                room_id, user_id, target, reason if isinstance(reason, str) else None, txn
            )
        await self._require_joined(room_id, user_id)
        if self._silenced(user_id, event_type, content):
            return fake_event_id()
        event = await self._events.send(room_id, user_id, event_type, content, txn=txn, ts=ts)
        return event.event_id

    async def set_state(
        self,
        room_id: str,
        user_id: str,
        event_type: str,
        state_key: str,
        content: dict[str, Any],
        ts: int | None = None,
    ) -> str:
        """Send a state event; the same content from the same sender is a no-op."""
        current_id = await self._stores.current_state.get_current_state_event_id(
            room_id, event_type, state_key
        )
        if current_id is not None:
            current = await self._stores.events.get_event(current_id)
            if current is not None and current.sender == user_id and current.content == content:
                membership = await self._stores.current_state.get_membership(room_id, user_id)
                if membership == "join":
                    return current_id
        if event_type != "m.room.member":
            await self._require_joined(room_id, user_id)
        elif content.get("membership") == "invite" and self._check_invite is not None:
            await self._check_invite(state_key)
        elif state_key == user_id and self.profile_policy is not None:
            content = await self.profile_policy.own_member_content(user_id, content)
        if self._silenced(user_id, event_type, content):
            return fake_event_id()
        if event_type == "m.room.canonical_alias":
            await self._check_canonical_alias(room_id, content)
        event = await self._events.send(room_id, user_id, event_type, content, state_key, ts=ts)
        return event.event_id

    async def _check_canonical_alias(self, room_id: str, content: dict[str, Any]) -> None:
        aliases: list[Any] = []
        if "alias" in content:
            aliases.append(content["alias"])
        alt = content.get("alt_aliases", [])
        if not isinstance(alt, list):
            raise MatrixError(400, "M_INVALID_PARAM", "alt_aliases must be a list")
        aliases.extend(alt)
        for alias in aliases:
            if alias is None and "alias" in content:
                continue
            if not isinstance(alias, str):
                raise MatrixError(400, "M_INVALID_PARAM", "aliases must be strings")
            try:
                validate_room_alias(alias)
            except ValueError:
                raise MatrixError(
                    400, "M_INVALID_PARAM", f"Invalid alias {alias[:255]!r}"
                ) from None
            info = await self._stores.rooms.get_alias(alias)
            if info is None or info.room_id != room_id:
                raise MatrixError(
                    400, "M_BAD_ALIAS", f"Room alias {alias} does not point to the room"
                )

    async def redact(
        self,
        room_id: str,
        user_id: str,
        target_id: str,
        reason: str | None,
        txn: Txn | None,
    ) -> str:
        existing = await self._existing_txn(txn)
        if existing is not None:
            return existing.event_id
        await self._require_joined(room_id, user_id)
        target = await self._stores.events.get_event(target_id)
        if target is None or target.room_id != room_id:
            raise not_found("Event not found")
        if self._moderation is not None:
            if target.sender != user_id and self._moderation.is_suspended(user_id):
                raise suspended_error(
                    "You can only redact your own events while the account is suspended"
                )
            if self._moderation.is_shadow_banned(user_id):
                return fake_event_id()
        if target.sender != user_id:
            ids = await self._stores.current_state.get_current_state_ids(
                room_id, ["m.room.power_levels", "m.room.create"]
            )
            loaded = await self._stores.events.get_events(ids.values())
            levels = PowerLevels(
                loaded.get(ids.get(("m.room.power_levels", ""), "")),
                loaded.get(ids.get(("m.room.create", ""), "")),
            )
            if levels.user_level(user_id) < levels.redact:
                raise forbidden("You don't have permission to redact events")
        content: dict[str, Any] = {}
        if reason is not None:
            content["reason"] = reason
        event = await self._events.send(
            room_id, user_id, "m.room.redaction", content, redacts=target_id, txn=txn
        )
        return event.event_id  # the persister applies it to the target
