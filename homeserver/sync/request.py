"""What a /sync request asks for, once the client handler has parsed it."""

from __future__ import annotations

from dataclasses import dataclass

from .filters import SyncFilter
from .tokens import StreamToken


@dataclass(frozen=True)
class SyncRequest:
    user_id: str
    device_id: str | None
    filter: SyncFilter
    since: StreamToken | None
    full_state: bool = False
    # v1.16 `use_state_after`: answer `state_after` (state up to the END of the
    # timeline, timeline state included) instead of `state`.
    use_state_after: bool = False
