"""Bounds on what a client connection can hold, for every listener (TLS included).

A stranger can open connections for free; each costs a file descriptor and a little
memory for as long as we keep it. Without bounds, 20,000 connections that never finish
their headers (slowloris) exhausted the process's descriptors: no request could be
accepted any more, and every failed accept logged a traceback. So:

- `IDLE_TIMEOUT_S`: a connection with no complete request in progress (a new one whose
  headers are still trickling in, or a keep-alive one between requests) is closed after
  this long. aiohttp's keep-alive timer enforces it from the moment a connection is
  made; a request being handled is never cut off by it.
- `ConnectionGuard`: at most `max_connections` open client connections; a connection
  beyond that is dropped as soon as it is accepted, with one warning per interval.
- `MalformedRequestFilter`: unparseable requests are one WARNING line per interval,
  not an ERROR traceback each.
- `send_guard`: clients that do not read their answers (a write paused too long, and
  all paused writes' bytes together) are bounded there.
- `QuietLoopErrors`: the event loop's own errors (an accept that failed with EMFILE,
  a peer that reset a TLS handshake) are logged as one line per kind per interval,
  never a traceback per connection, so a flood cannot fill the disk with logs.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from homeserver.send_guard import StalledWrites, guard_stalled_writes

log = logging.getLogger(__name__)

# No request within this long on a connection (from connect, or since the last
# response): closed. Long enough for a slow mobile client, short for a slowloris.
IDLE_TIMEOUT_S = 30.0
# Descriptors kept free for the database, outbound requests, media files and logs.
RESERVED_FDS = 256
# The most connections we ever allow, whatever the descriptor limit.
MAX_CONNECTIONS_CEILING = 50_000
# How often a repeated warning (connection cap hit, accept errors) may be logged.
WARN_INTERVAL_S = 60.0


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (as Synapse's soft_file_limit
    does by default); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 65_536


def default_max_connections(fd_limit: int) -> int:
    return max(64, min(MAX_CONNECTIONS_CEILING, fd_limit - RESERVED_FDS))


class _Throttled:
    """Logs a message at most once per interval per key, counting what it held back."""

    def __init__(self, interval_s: float = WARN_INTERVAL_S) -> None:
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None if `key` was let through within the interval (counted as held back);
        else how many were held back since, and the interval starts again."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def __call__(self, key: str, level: int, message: str, *args: Any) -> None:
        held = self.allow(key)
        if held is None:
            return
        suffix = f" ({held} more since the last such message)" if held else ""
        log.log(level, message + suffix, *args)


class ConnectionGuard:
    """Caps the open connections of an aiohttp server (all of a runner's sites)."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.refused = 0
        self._warn = _Throttled()

    def install(self, server: web.Server) -> None:
        accepted = server.connection_made

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            accepted(handler, transport)
            if len(server.connections) > self.max_connections:
                self.refused += 1
                self._warn(
                    "cap",
                    logging.WARNING,
                    "%d client connections open, the most allowed: closing new ones",
                    self.max_connections,
                )
                transport.abort()

        server.connection_made = connection_made  # type: ignore[method-assign]


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs each unparseable request (bad request line, bad header, oversized
    line) as ERROR with a traceback: a lever for any client to flood the log. Those
    become one WARNING line per interval (counting the rest); real handler errors
    are left alone."""

    def __init__(self) -> None:
        super().__init__()
        self._log = _Throttled()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self._log("malformed", logging.WARNING, "Malformed HTTP request refused: %s", exc)
        return False


_MALFORMED_FILTER = MalformedRequestFilter()


def quiet_malformed_requests() -> None:
    """Install the filter on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if _MALFORMED_FILTER not in server_log.filters:
        server_log.addFilter(_MALFORMED_FILTER)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose server applies `ConnectionGuard`, the idle timeout and the
    bounds on unsent answers (`send_guard.StalledWrites`)."""

    def __init__(
        self,
        app: web.Application,
        *,
        max_connections: int,
        stalls: StalledWrites | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("keepalive_timeout", IDLE_TIMEOUT_S)
        super().__init__(app, **kwargs)
        quiet_malformed_requests()
        self.guard = ConnectionGuard(max_connections)
        self.stalls = stalls if stalls is not None else StalledWrites()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        self.guard.install(server)
        guard_stalled_writes(server, self.stalls)
        return server

    async def cleanup(self) -> None:
        await super().cleanup()
        self.stalls.close()


class QuietLoopErrors:
    """An event-loop exception handler: one line per kind of error per interval.

    Socket-level errors are expected under attack or overload (EMFILE on accept, a
    handshake reset by the peer); anything else still gets a full traceback, as
    asyncio's default handler would give it, at most once per interval per message.
    """

    def __init__(self) -> None:
        self._log = _Throttled()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "event loop error")
        exc = context.get("exception")
        if isinstance(exc, OSError | asyncio.TimeoutError) or "accept" in message:
            self._log(message, logging.WARNING, "%s: %s", message, exc)
            return
        if self._log.allow(f"other:{message}") is not None:
            loop.default_exception_handler(context)
