"""Sync tokens: one position per stream, so `since` covers every kind of update.

Format `s<events>_<typing>_<receipts>_<presence>_<account_data>_<to_device>_<device_lists>`;
opaque to clients. Unknown or malformed tokens are a 400 M_INVALID_PARAM, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from homeserver.errors import invalid_param

STREAMS = (
    "events",
    "typing",
    "receipts",
    "presence",
    "account_data",
    "to_device",
    "device_lists",
)


@dataclass(frozen=True)
class StreamToken:
    events: int = 0
    typing: int = 0
    receipts: int = 0
    presence: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0

    def encode(self) -> str:
        return "s" + "_".join(str(getattr(self, f.name)) for f in fields(self))

    @classmethod
    def decode(cls, token: str) -> StreamToken:
        if not isinstance(token, str) or not token.startswith("s") or len(token) > 200:
            raise invalid_param("Invalid stream token")
        parts = token[1:].split("_")
        if not parts or len(parts) > len(STREAMS):
            raise invalid_param("Invalid stream token")
        values: list[int] = []
        for part in parts:
            if not part.isdigit() or len(part) > 18:
                raise invalid_param("Invalid stream token")
            values.append(int(part))
        return cls(*values)

    def advance(self, stream: str, position: int) -> StreamToken:
        if getattr(self, stream) >= position:
            return self
        return replace(self, **{stream: position})

    def is_after(self, other: StreamToken) -> bool:
        """True if any stream of self is ahead of other (spelt out: every sync asks)."""
        return (
            self.events > other.events
            or self.typing > other.typing
            or self.receipts > other.receipts
            or self.presence > other.presence
            or self.account_data > other.account_data
            or self.to_device > other.to_device
            or self.device_lists > other.device_lists
        )

    def copy_with(self, **positions: int) -> StreamToken:
        return replace(self, **positions)
