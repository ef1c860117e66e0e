"""Room pagination tokens for /messages, /context and sync's `prev_batch`.

A token names a point in the global event stream: `t<n>` means "just after the event
with stream ordering n" - every event with ordering <= n is before the token, every
event with ordering > n after it. Backfilled history has negative orderings, so `t-7`
is valid too. Paginating backwards from `t<n>` returns orderings n, n-1, ... and
forwards returns n+1, n+2, ...; the `end` of a page is the token after its last event
in the direction of travel, so consecutive pages neither overlap nor leave gaps.

Sync's tokens (`s<events>_<typing>_...`, homeserver.sync.tokens.StreamToken) name the
same points through their `events` position, so a sync `next_batch` or a `prev_batch`
made from it can be handed to /messages as `from` or `to` unchanged: the client API
turns them into room tokens (homeserver.client.room_services.room_token), since rooms
never imports sync.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.errors import invalid_param

MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True, order=True)
class RoomToken:
    """A point in the event stream (see the module docstring)."""

    stream: int

    def encode(self) -> str:
        return f"t{self.stream}"

    @classmethod
    def parse(cls, token: str) -> RoomToken:
        """Accept `t<n>`; anything else is 400 M_INVALID_PARAM."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise invalid_param("Invalid pagination token")
        if token[0] == "t":
            body = token[1:]
            # Accept Synapse-style "t<topo>-<stream>" by taking the stream part.
            if body.count("-") == 1 and not body.startswith("-"):
                body = body.split("-", 1)[1]
            digits = body[1:] if body.startswith("-") else body
            if digits.isdigit() and len(digits) <= 18:
                return cls(int(body))
        raise invalid_param("Invalid pagination token")
