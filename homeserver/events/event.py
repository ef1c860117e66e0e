"""The event model: a PDU dict plus its room version and event ID.

`Event` is a thin, read-only view: the PDU dict is what was signed and is never
modified after construction (redaction produces a new Event). Format validation
(`events.validation`) runs before an Event is trusted, so accessors here assume the
types are right.
"""

from __future__ import annotations

from typing import Any

from .hashing import compute_event_id
from .room_versions import RoomVersion

StateKey = tuple[str, str]


class Event:
    __slots__ = ("pdu", "room_version", "event_id", "rejected_reason", "_room_id")

    def __init__(
        self, pdu: dict[str, Any], room_version: RoomVersion, event_id: str | None = None
    ) -> None:
        self.pdu = pdu
        self.room_version = room_version
        self.event_id: str = event_id or compute_event_id(pdu, room_version)
        self.rejected_reason: str | None = None
        room_id = pdu.get("room_id")
        if room_id is None and room_version.room_id_is_create_event_id and self.is_create():
            room_id = "!" + self.event_id[1:]
        self._room_id: str = room_id  # type: ignore[assignment]

    def __repr__(self) -> str:
        sk = f", {self.state_key!r}" if self.is_state() else ""
        return f"<Event {self.event_id} {self.type}{sk} from {self.sender}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)

    @property
    def room_id(self) -> str:
        return self._room_id

    @property
    def type(self) -> str:
        return self.pdu["type"]

    @property
    def sender(self) -> str:
        return self.pdu["sender"]

    @property
    def state_key(self) -> str | None:
        return self.pdu.get("state_key")

    @property
    def content(self) -> dict[str, Any]:
        content = self.pdu.get("content")
        return content if isinstance(content, dict) else {}

    @property
    def depth(self) -> int:
        return int(self.pdu.get("depth", 0))

    @property
    def origin_server_ts(self) -> int:
        return int(self.pdu.get("origin_server_ts", 0))

    @property
    def unsigned(self) -> dict[str, Any]:
        unsigned = self.pdu.get("unsigned")
        return unsigned if isinstance(unsigned, dict) else {}

    @property
    def membership(self) -> str | None:
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @property
    def redacts(self) -> str | None:
        """The target of an m.room.redaction: in content from v11, top level before."""
        if self.type != "m.room.redaction":
            return None
        if self.room_version.redaction_rules >= 11:
            target = self.content.get("redacts", self.pdu.get("redacts"))
        else:
            target = self.pdu.get("redacts", self.content.get("redacts"))
        return target if isinstance(target, str) else None

    @property
    def prev_event_ids(self) -> list[str]:
        return _edge_ids(self.pdu.get("prev_events"))

    @property
    def auth_event_ids(self) -> list[str]:
        return _edge_ids(self.pdu.get("auth_events"))

    @property
    def origin(self) -> str:
        """The server that created the event: the sender's server."""
        return self.sender.partition(":")[2]

    def is_state(self) -> bool:
        return "state_key" in self.pdu

    def is_create(self) -> bool:
        return self.type == "m.room.create" and self.pdu.get("state_key") == ""

    @property
    def state_tuple(self) -> StateKey:
        return (self.type, self.pdu["state_key"])


def _edge_ids(edges: Any) -> list[str]:
    """prev_events/auth_events: plain IDs from v3, `[id, {hashes}]` pairs in v1/v2."""
    if not isinstance(edges, list):
        return []
    out: list[str] = []
    for edge in edges:
        if isinstance(edge, str):
            out.append(edge)
        elif isinstance(edge, list) and edge and isinstance(edge[0], str):
            out.append(edge[0])
    return out
