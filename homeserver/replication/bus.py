"""The Redis bus: one pub/sub channel that every process of a deployment shares.

What goes over it is small and loss-tolerant by design: stream positions that moved
(with the users and rooms concerned), cache keys that were invalidated, and the
ephemeral payloads that live only in memory (typing, presence). Event data never
travels here: a worker that hears "events reached N" reads them from PostgreSQL. So a
Redis restart loses nothing that matters: on every (re)connection `on_connected`
runs, and a worker then re-reads every stream position from the database and drops
its replicated caches (invalidations sent while it was away may be lost).

Lost messages are detected, not assumed away: every batch a process publishes carries
its sequence number, and an idle publisher sends an empty batch every HEARTBEAT_S. A
receiver that sees a number out of order (Redis dropped or restarted, the publisher
restarted) runs `on_connected` as after a reconnection, at most one heartbeat late.
(redis-py would otherwise reconnect a subscription silently, hiding the gap.)

Bounds: at most MAX_QUEUED outgoing messages wait while Redis is unreachable; past
that the oldest are dropped, and the sequence gap makes every receiver catch up from
the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from homeserver.config.workers import RedisConfig

log = logging.getLogger(__name__)

MAX_QUEUED = 100_000
MAX_MESSAGE_BYTES = 8 << 20  # anything bigger on the channel is not ours: ignored
MAX_BATCH = 1000  # messages per PUBLISH (one JSON array: one parse per batch)
RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)
HEARTBEAT_S = 1.0

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class RedisBus:
    """Publishes this process's messages in order; hands every other process's
    messages, in order, to `handler`; reconnects forever with a short backoff."""

    def __init__(self, config: RedisConfig, instance: str) -> None:
        self._config = config
        self.instance = instance
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._sequence = 0  # of the batches this process published
        self._seen: dict[str, int] = {}  # publisher -> the last batch number heard
        self._tasks: list[asyncio.Task[None]] = []
        self._handler: Handler | None = None
        self._on_connected: Callable[[], Awaitable[None]] | None = None
        self.connected = asyncio.Event()
        # Waited for before each batch is published (the main's write barrier: what
        # was invalidated inside a transaction is told once that transaction committed).
        self.before_publish: Callable[[], Awaitable[None]] | None = None
        self._drained = asyncio.Event()  # set while nothing waits to be published
        self._drained.set()

    def _client(self) -> aioredis.Redis:
        c = self._config
        return aioredis.Redis(
            host=c.host,
            port=c.port,
            password=c.password,
            db=c.dbid,
            socket_connect_timeout=5,
            health_check_interval=10,
            # Fail instead of reconnecting silently: our loops reconnect and resync.
            retry=Retry(NoBackoff(), 0),
        )

    def start(
        self,
        handler: Handler | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._handler = handler
        self._on_connected = on_connected
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="redis-publish"))
        if handler is not None:
            self._tasks.append(asyncio.create_task(self._subscribe_loop(), name="redis-subscribe"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def publish(self, message: dict[str, Any]) -> None:
        """Queue a message (never blocks; sent in order by the publish loop)."""
        self._queue.append(message)
        if len(self._queue) > MAX_QUEUED:
            self._queue.popleft()  # the sequence gap tells the receivers
        self._drained.clear()
        self._wake.set()

    async def drained(self, timeout_s: float = 1.0) -> None:
        """Wait until what was queued is on Redis (at most `timeout_s`: Redis may be
        away). Redis hands a message to every subscriber before it answers PUBLISH."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout_s)

    async def _publish_loop(self) -> None:
        attempt = 0
        while True:
            client = self._client()
            try:
                await client.ping()  # type: ignore[misc]
                attempt = 0
                while True:
                    if not self._queue:
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), HEARTBEAT_S)
                    if self.before_publish is not None:
                        await self.before_publish()
                    batch = [self._queue[i] for i in range(min(len(self._queue), MAX_BATCH))]
                    self._sequence += 1
                    envelope = {"o": self.instance, "n": self._sequence, "m": batch}
                    try:
                        await client.publish(
                            self._config.channel, json.dumps(envelope, default=str)
                        )
                    except BaseException:
                        self._sequence -= 1  # not sent: the same number next time
                        raise
                    for _ in batch:
                        self._queue.popleft()
                    if not self._queue:
                        self._drained.set()
            except (RedisError, OSError) as exc:
                # Unsent messages stay queued; a receiver that missed any sees the gap.
                log.warning("Redis publish: %s; retrying", exc)
                await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
                attempt += 1
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _subscribe_loop(self) -> None:
        assert self._handler is not None
        attempt = 0
        while True:
            client = self._client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._config.channel)
                attempt = 0
                self._seen.clear()  # what follows is caught up by on_connected
                if self._on_connected is not None:
                    await self._on_connected()
                self.connected.set()
                log.info("Replication: following %s on Redis", self._config.channel)
                while True:
                    raw = await pubsub.get_message(timeout=30)
                    if raw is None:
                        continue
                    data = raw.get("data")
                    if not isinstance(data, bytes | str) or len(data) > MAX_MESSAGE_BYTES:
                        continue
                    try:
                        envelope = json.loads(data)
                    except ValueError:
                        continue
                    origin = envelope.get("o") if isinstance(envelope, dict) else None
                    if not isinstance(origin, str) or origin == self.instance:
                        continue
                    number, last = envelope.get("n"), self._seen.get(origin)
                    self._seen[origin] = number if isinstance(number, int) else 0
                    if last is not None and number != last + 1 and self._on_connected:
                        log.warning("Replication: missed messages from %s; catching up", origin)
                        await self._on_connected()
                    for message in envelope.get("m") or ():
                        if isinstance(message, dict):
                            try:
                                await self._handler(message)
                            except Exception:  # the subscription must outlive any message
                                log.exception("Replication: a message handler failed")
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("Redis subscription: %s; reconnecting", exc)
                await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
                attempt += 1
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
