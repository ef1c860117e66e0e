"""The "usage limit reached" server notice (Synapse's resource-limits server notices).

While the monthly active user limit is reached, each counted user who syncs is sent
an `m.server_notice.usage_limit_reached` message in their server notices room,
pinned (`m.room.pinned_events`): Element shows a banner from it, so the users who
can still use the server know why their colleagues cannot. Once back under the
limit the pin is removed (other pinned events stay). Only with limit_usage_by_mau
and a `server_notices` section, not while hs_disabled (as Synapse), and none while
`mau_limit_alerting: false` (a shown one is then taken down).

Cheap per sync: what each user's room shows is remembered, so a sync reads the
cached count and nothing else unless the state must change. Runs on the process that
serves the sync and can send room events (the main process; see composition_limits).
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.accounts.mau import LIMIT_TYPE_MAU, ResourceLimits
from homeserver.admin.notices import ServerNotices
from homeserver.errors import MatrixError
from homeserver.storage import Stores

log = logging.getLogger(__name__)

USAGE_LIMIT_REACHED = "m.server_notice.usage_limit_reached"
PINNED = "m.room.pinned_events"


class LimitNotices:
    def __init__(self, limits: ResourceLimits, notices: ServerNotices, stores: Stores) -> None:
        self._limits = limits
        self._notices = notices
        self._stores = stores
        config = limits.config
        self.enabled = (
            config.limit_usage_by_mau and not config.hs_disabled and notices.system_user is not None
        )
        self._shown: dict[str, bool] = {}  # user -> whether their room shows the notice
        self._busy: set[str] = set()

    async def on_sync(self, user_id: str) -> None:
        """Bring the user's notice room in line with the limit (Synapse: on sync)."""
        if not self.enabled or user_id in self._busy:
            return
        if await self._limits.last_active(user_id) is None:
            return  # refused anyway: they would not see it
        reason = await self._limits.blocked_reason()
        alerting = self._limits.config.mau_limit_alerting
        if reason is not None and reason[1] == LIMIT_TYPE_MAU and not alerting:
            reason = None  # alerting off: take down a notice still shown
        wanted = reason is not None
        if self._shown.get(user_id) == wanted:
            return
        self._busy.add(user_id)
        try:
            await self._update(user_id, reason)
        except MatrixError as exc:
            log.warning("resource limit notice for %s failed: %s", user_id, exc.message)
        finally:
            self._busy.discard(user_id)

    async def _update(self, user_id: str, reason: tuple[str, str] | None) -> None:
        room_id = await self._notices.room_of(user_id)
        shown, others = await self._pinned(room_id) if room_id else (False, [])
        if shown and reason is None:
            await self._notices.send(user_id, PINNED, {"pinned": others}, state_key="")
        elif reason is not None and not shown:
            message, limit_type = reason
            content: dict[str, Any] = {
                "body": message,
                "msgtype": USAGE_LIMIT_REACHED,
                "server_notice_type": USAGE_LIMIT_REACHED,
                "admin_contact": self._limits.config.admin_contact,
                "limit_type": limit_type,
            }
            event_id = await self._notices.send(user_id, "m.room.message", content)
            await self._notices.send(user_id, PINNED, {"pinned": [event_id]}, state_key="")
        self._shown[user_id] = reason is not None

    async def _pinned(self, room_id: str) -> tuple[bool, list[str]]:
        """Whether the room pins a limit notice; the other pinned events (kept when the
        notice is taken down)."""
        pin_id = await self._stores.current_state.get_current_state_event_id(room_id, PINNED)
        pin = await self._stores.events.get_event(pin_id) if pin_id else None
        pinned = pin.content.get("pinned") if pin is not None else None
        if not isinstance(pinned, list):
            return False, []
        ids = [p for p in pinned if isinstance(p, str)]
        events = await self._stores.events.get_events(ids)
        notices = {
            eid
            for eid, event in events.items()
            if event.type == "m.room.message"
            and event.content.get("msgtype") == USAGE_LIMIT_REACHED
        }
        return bool(notices), [eid for eid in ids if eid not in notices]
