"""Applying accepted redactions to their targets, whatever the redaction's origin.

The auth rules decide whether an m.room.redaction event itself is accepted; whether it
*takes effect* on its target is a separate check (spec, "Redactions" in the room
versions): the target must be in the same room, and either the redaction's sender has
the room's `redact` power level (in the state at the redaction) or both senders are on
the same server. The create event is never redacted.

`Persister` calls `after_persist` for every stored event (`apply_waiting` for a
remote chain of messages): an accepted redaction is
applied to a target we hold, and a newly stored event is redacted by any accepted
redaction that named it before it arrived (the storage keeps `redacts` per redaction).
"""

from __future__ import annotations

import logging

from homeserver.events import Event
from homeserver.graph.power_levels import PowerLevels
from homeserver.storage import Stores

log = logging.getLogger(__name__)

PL_KEY = ("m.room.power_levels", "")
CREATE_KEY = ("m.room.create", "")


def _domain(user_id: str) -> str:
    return user_id.partition(":")[2]


class RedactionApplier:
    def __init__(self, stores: Stores, server_name: str) -> None:
        self._stores = stores
        self._server_name = server_name

    async def after_persist(self, event: Event, *, accepted: bool) -> None:
        """`accepted`: stored in the room's timeline (not rejected, not soft-failed,
        not an outlier)."""
        if event.type == "m.room.redaction":
            if accepted:
                target_id = event.redacts
                target = await self._stores.events.get_event(target_id) if target_id else None
                if target is not None:
                    await self._apply(event, target)
            return
        await self.apply_waiting([event])

    async def apply_waiting(self, events: list[Event]) -> None:
        """Redact each of `events` (newly stored, none a redaction) that an accepted
        redaction named before it arrived: one query for all of them."""
        # A redaction can only precede its target when both came from elsewhere: our
        # own new events cannot have been named by anyone yet.
        remote = {e.event_id: e for e in events if _domain(e.sender) != self._server_name}
        if not remote:
            return
        waiting = await self._stores.events.get_redactions_of(list(remote))
        for target_id, redaction_ids in waiting.items():
            if target_id in remote:
                await self._apply_first(remote[target_id], redaction_ids)

    async def _apply_first(self, event: Event, waiting: list[str]) -> None:
        """Apply the first accepted redaction of `waiting` that may redact `event`."""
        for redaction_id in waiting:
            redaction = await self._stores.events.get_event(redaction_id)
            if redaction is None or not await self._is_accepted(redaction):
                continue
            if await self._apply(redaction, event):
                return

    async def _is_accepted(self, event: Event) -> bool:
        events = self._stores.events
        return (
            event.rejected_reason is None
            and not await events.is_outlier(event.event_id)
            and not await events.is_soft_failed(event.event_id)
        )

    async def _apply(self, redaction: Event, target: Event) -> bool:
        if target.room_id != redaction.room_id or target.is_create():
            return False
        if not await self._may_redact(redaction, target):
            log.info("redaction %s may not redact %s", redaction.event_id, target.event_id)
            return False
        if (await self._stores.events.get_redacted_because([target.event_id])).get(target.event_id):
            return True  # already redacted: the first redaction stays the reason
        await self._stores.events.mark_redacted(target.event_id, redaction.event_id)
        return True

    async def _may_redact(self, redaction: Event, target: Event) -> bool:
        if _domain(redaction.sender) == _domain(target.sender):
            return True
        state = await self._stores.state.read_state_ids_for_event(redaction.event_id)
        if state is None:
            return False
        wanted = [e for e in (state.get(PL_KEY), state.get(CREATE_KEY)) if e]
        loaded = await self._stores.events.get_events(wanted)
        levels = PowerLevels(
            loaded.get(state.get(PL_KEY, "")), loaded.get(state.get(CREATE_KEY, ""))
        )
        return levels.user_level(redaction.sender) >= levels.redact
