"""PDUs as the client-server API shows them ("ClientEvent").

A client sees `content, event_id, origin_server_ts, room_id, sender, type`, `state_key`
for state events, `redacts` for redactions, and `unsigned` with what only the reading
server knows: `age`, the sending device's `transaction_id`, `prev_content` /
`replaces_state` for state, `redacted_because` once redacted (the content then pruned by
the room version's redaction algorithm), and the reader's `membership` at the event.
Federation-only keys (hashes, signatures, auth/prev events, depth) never leak out.

This is on the sync hot path: one dict built per event, no copying of content unless
the event was redacted, no I/O. Callers look up what `unsigned` needs in bulk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from homeserver.events import Event
from homeserver.events.redaction import redact

# The sync filter's `event_format: "federation"` is served elsewhere; this is "client".


def format_client_event(
    event: Event,
    *,
    now_ms: int,
    redacted_because: Event | dict[str, Any] | None = None,
    txn_id: str | None = None,
    prev_content: dict[str, Any] | None = None,
    replaces_state: str | None = None,
    membership: str | None = None,
    prev_sender: str | None = None,
) -> dict[str, Any]:
    """One event in client format.

    - `redacted_because`: the redaction event (Event or already formatted dict) if the
      event was redacted; its content is then pruned.
    - `txn_id`: only pass it when the reader is the device that sent the event.
    - `prev_content`/`replaces_state`/`prev_sender`: the state this state event replaced.
    - `membership`: the reader's membership at the event (MSC4115, `unsigned.membership`).
    """
    pdu = event.pdu
    content = pdu.get("content")
    if not isinstance(content, dict):
        content = {}
    if redacted_because is not None:
        content = redact({"type": pdu.get("type"), "content": content}, event.room_version)[
            "content"
        ]
    out: dict[str, Any] = {
        "content": content,
        "event_id": event.event_id,
        "origin_server_ts": pdu.get("origin_server_ts", 0),
        "room_id": event.room_id,
        "sender": pdu["sender"],
        "type": pdu["type"],
    }
    if "state_key" in pdu:
        out["state_key"] = pdu["state_key"]
    if pdu["type"] == "m.room.redaction" and redacted_because is None:
        target = event.redacts
        if target is not None:
            out["redacts"] = target
    unsigned: dict[str, Any] = {}
    ts = pdu.get("origin_server_ts")
    if isinstance(ts, int):
        unsigned["age"] = max(0, now_ms - ts)
    if txn_id is not None:
        unsigned["transaction_id"] = txn_id
    if replaces_state is not None:
        unsigned["replaces_state"] = replaces_state
        if prev_content is not None:
            unsigned["prev_content"] = prev_content
        if prev_sender is not None:
            unsigned["prev_sender"] = prev_sender
    elif prev_content is not None:
        unsigned["prev_content"] = prev_content
    if membership is not None:
        unsigned["membership"] = membership
    if redacted_because is not None:
        unsigned["redacted_because"] = (
            redacted_because
            if isinstance(redacted_because, dict)
            else format_client_event(redacted_because, now_ms=now_ms)
        )
    out["unsigned"] = unsigned
    return out


def serialize_events(
    events: Iterable[Event],
    *,
    now_ms: int,
    redactions: Mapping[str, Event] | None = None,
    txn_ids: Mapping[str, str] | None = None,
    prev_state: Mapping[str, Event] | None = None,
    memberships: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Format many events; the mappings are keyed by the formatted event's ID.

    `redactions`: event ID -> the redaction that redacted it. `txn_ids`: event ID -> the
    reader device's transaction ID. `prev_state`: state event ID -> the state event it
    replaced. `memberships`: event ID -> the reader's membership at that event.
    """
    redactions = redactions or {}
    txn_ids = txn_ids or {}
    prev_state = prev_state or {}
    memberships = memberships or {}
    out = []
    for ev in events:
        eid = ev.event_id
        prev = prev_state.get(eid)
        out.append(
            format_client_event(
                ev,
                now_ms=now_ms,
                redacted_because=redactions.get(eid),
                txn_id=txn_ids.get(eid),
                prev_content=prev.content if prev is not None else None,
                replaces_state=prev.event_id if prev is not None else None,
                prev_sender=prev.sender if prev is not None else None,
                membership=memberships.get(eid),
            )
        )
    return out


def strip_state_items(items: Any) -> list[dict[str, Any]]:
    """Stripped state from what a peer sent: full PDUs (the v1.16+ federation form of
    `invite_room_state` / `knock_room_state`) or already stripped events. Clients only
    ever see the stripped keys; anything malformed is dropped."""
    out: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kept = {k: item[k] for k in ("type", "state_key", "content", "sender") if k in item}
        if isinstance(kept.get("type"), str) and isinstance(kept.get("content"), dict):
            out.append(kept)
    return out


def strip_event(event: Event) -> dict[str, Any]:
    """The stripped state form (invite/knock room state): type, state_key, content, sender."""
    return {
        "type": event.type,
        "state_key": event.state_key or "",
        "content": event.content,
        "sender": event.sender,
    }
