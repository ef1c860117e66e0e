"""What the media repository needs from other servers (implemented in federation/)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

# Receives the body chunk by chunk (it raises to stop the transfer, e.g. when too large).
Sink = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class RemoteFile:
    content_type: str | None
    filename: str | None


class RemoteMediaError(Exception):
    """A remote server would not give us the media. `not_found`: it said it has no
    such media (we answer 404); otherwise it failed or was unreachable (502)."""

    def __init__(self, reason: str, *, not_found: bool = False) -> None:
        super().__init__(reason)
        self.not_found = not_found


class RemoteMediaSource(Protocol):
    async def download(
        self, origin: str, media_id: str, sink: Sink, *, max_size: int, timeout_s: float
    ) -> RemoteFile:
        """Stream `mxc://origin/media_id` into `sink`; raise RemoteMediaError."""
        ...
