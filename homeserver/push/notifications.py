"""GET /notifications: the events a user was notified about, newest first."""

from __future__ import annotations

import time
from typing import Any

from homeserver.rooms.client_events import serialize_events
from homeserver.storage import Stores
from homeserver.storage.push import PushStore

from .actions import ActionGenerator

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


async def list_notifications(
    stores: Stores,
    push: PushStore,
    generator: ActionGenerator,
    user_id: str,
    *,
    from_token: int | None,
    limit: int,
    only_highlight: bool,
) -> dict[str, Any]:
    """The /notifications response body. `from_token` is a previous `next_token`."""
    await generator.wait_until(await stores.events.get_current_stream_position())
    limit = max(1, min(limit, MAX_LIMIT))
    rows = await push.get_notifications(
        user_id, before=from_token, limit=limit, only_highlight=only_highlight
    )
    events = await stores.events.get_events([r.event_id for r in rows])
    redactions = await stores.events.get_redaction_events(events)
    now = int(time.time() * 1000)
    notifications = []
    for row in rows:
        event = events.get(row.event_id)
        if event is None:
            continue
        (formatted,) = serialize_events([event], now_ms=now, redactions=redactions)
        notifications.append(
            {
                "actions": row.actions,
                "event": formatted,
                "read": row.read,
                "room_id": row.room_id,
                "ts": row.ts,
            }
        )
    out: dict[str, Any] = {"notifications": notifications}
    if len(rows) == limit:
        out["next_token"] = str(rows[-1].stream_ordering)
    return out
