"""Bounds on what a client that does not read its answers can make us hold.

An answer is written to the connection whole (a /sync of a big account is megabytes);
what the client has not read waits in the transport's buffer, in our memory. A client
that stops reading (or reads a trickle) kept that buffer, and the request's task with
its objects, for as long as it liked: nothing ever timed a write out. A few thousand
such connections hold gigabytes, and the same happens without malice when thousands of
clients sync at once and read slower than we answer. Two bounds, for every listener
(TLS included):

- `SEND_STALL_TIMEOUT_S`: a connection whose writes stay paused (its unsent bytes above
  the transport's high-water mark) this long without reading enough to resume them is
  closed, as nginx's `send_timeout` (60 s) does. A client reading at a few hundred
  bytes per second resumes its writes often enough to be left alone.
- `MAX_STALLED_BYTES`: the unsent bytes of all paused connections together. Past it,
  the connections paused longest are closed first until the total is back under the
  bound; one paused for less than `STALL_GRACE_S` is never closed for it (a burst of
  big answers to clients that do read gets that long to drain), so the bound holds to
  within what the server writes in that grace.

Closing the connection frees the buffer at once and fails the request's pending write,
which ends its task. Only what is written through the transport counts: a media file
sent with sendfile() is never in our memory (its descriptor and connection are bounded
by the connection cap in `listener_guard`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

# As nginx's send_timeout: the longest a write may stay paused.
SEND_STALL_TIMEOUT_S = 60.0
# All paused connections' unsent bytes together (the answers a 2,000-member room's
# members get at once on an initial sync are ~700 KB each: ~370 of them fit).
MAX_STALLED_BYTES = 256 * 1024 * 1024
# A paused connection is not closed for the total bound before it has been paused
# this long: clients that read get the time to take a burst of big answers.
STALL_GRACE_S = 5.0


_Pause = tuple[float, int, asyncio.TimerHandle, asyncio.BaseTransport]


class StalledWrites:
    """The connections whose writes are paused, oldest pause first, with their unsent
    bytes as counted when they paused; closes them as the two bounds require.

    The count taken at the pause only overstates what is still unsent (the client
    reads, the buffer shrinks; no more is written until the write resumes, bar the
    rest of one 64 KB chunk), so the total bound holds; it is recounted from the
    transports before any connection is closed for it.
    """

    def __init__(
        self,
        *,
        timeout_s: float = SEND_STALL_TIMEOUT_S,
        max_bytes: int = MAX_STALLED_BYTES,
        grace_s: float = STALL_GRACE_S,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.grace_s = grace_s
        self.total_bytes = 0
        self.closed_for_timeout = 0
        self.closed_for_total = 0
        # handler -> (time of the pause, bytes unsent then, timeout timer, transport)
        self._paused: dict[Any, _Pause] = {}
        self._recheck: asyncio.TimerHandle | None = None
        self._last_warning = 0.0

    @property
    def paused_connections(self) -> int:
        return len(self._paused)

    def paused(self, handler: Any, transport: asyncio.BaseTransport) -> None:
        if handler in self._paused:
            return
        loop = asyncio.get_running_loop()
        size = _unsent(transport)
        timer = loop.call_later(self.timeout_s, self._timed_out, handler)
        self._paused[handler] = (time.monotonic(), size, timer, transport)
        self.total_bytes += size
        # With a recheck pending, every connection paused is within its grace until
        # then: nothing to close before it (and no recount per pause in a burst).
        if self.total_bytes > self.max_bytes and self._recheck is None:
            self._enforce_total()

    def resumed(self, handler: Any) -> None:
        entry = self._paused.pop(handler, None)
        if entry is not None:
            entry[2].cancel()
            self.total_bytes -= entry[1]

    def _timed_out(self, handler: Any) -> None:
        if handler not in self._paused:
            return
        self.closed_for_timeout += 1
        self._warn("a client read none of its answer for %.0f s: connection closed", self.timeout_s)
        self._close(handler)

    def _enforce_total(self) -> None:
        """Close the longest-paused connections past the grace until the total is
        under the bound; if that is not enough yet, look again when the oldest
        remaining pause comes of age."""
        self._recount()
        now = time.monotonic()
        for handler, (paused_at, *_) in list(self._paused.items()):
            if self.total_bytes <= self.max_bytes:
                return
            if now - paused_at < self.grace_s:
                self._schedule_recheck(paused_at + self.grace_s - now)
                return
            self.closed_for_total += 1
            self._warn(
                "unsent answers to clients that do not read passed %d MB: closing "
                "the connections paused longest",
                self.max_bytes >> 20,
            )
            self._close(handler)

    def _recount(self) -> None:
        total = 0
        for handler, (paused_at, _, timer, transport) in list(self._paused.items()):
            size = _unsent(transport)
            self._paused[handler] = (paused_at, size, timer, transport)
            total += size
        self.total_bytes = total

    def _schedule_recheck(self, delay: float) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        loop = asyncio.get_running_loop()
        self._recheck = loop.call_later(max(delay, 0.01), self._rechecked)

    def _rechecked(self) -> None:
        self._recheck = None
        if self.total_bytes > self.max_bytes:
            self._enforce_total()

    def _close(self, handler: Any) -> None:
        self.resumed(handler)
        transport = handler.transport
        if transport is not None:
            transport.abort()  # connection_lost fails the pending write

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60.0:
            self._last_warning = now
            log.warning(message, *args)

    def forget(self, handler: Any) -> None:
        self.resumed(handler)

    def close(self) -> None:
        """Cancel every timer (the server is shutting down)."""
        for _, _, timer, _ in self._paused.values():
            timer.cancel()
        self._paused.clear()
        self.total_bytes = 0
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None


def _unsent(transport: asyncio.BaseTransport) -> int:
    try:
        return int(transport.get_write_buffer_size())  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return 0


class StallGuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol, telling `StalledWrites` when the socket's
    transport pauses and resumes its writes and when the connection goes.

    Over TLS the socket's transport is below asyncio's TLS layer, which encrypts all
    that is written at once into it and pauses the application only for what it
    could not hand down: an answer written in one piece (all of ours) would never
    pause it. So for TLS the TLS layer's own pause and resume (the socket's
    transport's flow control) are followed instead, and the socket's transport is
    the one whose unsent bytes are counted.
    """

    stalls: StalledWrites
    _socket_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        tls_layer = getattr(transport, "_ssl_protocol", None)
        below = getattr(tls_layer, "_transport", None)
        if tls_layer is None or below is None:
            self._socket_transport = transport
            return
        self._socket_transport = below
        pause, resume = tls_layer.pause_writing, tls_layer.resume_writing

        def tls_paused() -> None:
            pause()
            self.stalls.paused(self, below)

        def tls_resumed() -> None:
            self.stalls.resumed(self)
            resume()

        tls_layer.pause_writing = tls_paused
        tls_layer.resume_writing = tls_resumed

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._socket_transport is self.transport and self.transport is not None:
            self.stalls.paused(self, self.transport)

    def resume_writing(self) -> None:
        if self._socket_transport is self.transport:
            self.stalls.resumed(self)
        super().resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.stalls.forget(self)
        self._socket_transport = None
        super().connection_lost(exc)


class StallGuardedServer(web.Server):
    """A web.Server whose connections are `StallGuardedRequestHandler`s."""

    stalls: StalledWrites

    def __call__(self) -> RequestHandler:
        handler = StallGuardedRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.stalls = self.stalls
        return handler


def guard_stalled_writes(server: web.Server, stalls: StalledWrites) -> None:
    """Make `server` (as the app runner built it) hand out stall-guarded connections.

    The runner builds a plain web.Server through the application; re-classing that one
    object keeps every setting the application gave it, where building our own would
    have to repeat aiohttp's private construction."""
    server.__class__ = StallGuardedServer
    server.stalls = stalls  # type: ignore[attr-defined]
