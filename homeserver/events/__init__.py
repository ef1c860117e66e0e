"""Pure event format code: room versions, canonical JSON, hashes, redaction, signing.

No I/O here; see ARCHITECTURE.md.
"""

from .event import Event, StateKey
from .room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version

__all__ = ["Event", "StateKey", "KNOWN_ROOM_VERSIONS", "RoomVersion", "get_room_version"]
