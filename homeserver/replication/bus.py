"""The Redis bus: one pub/sub channel that every process of a deployment shares.

What goes over it is small and loss-tolerant by design: stream positions that moved
(with the users and rooms concerned), cache keys that were invalidated, and the
ephemeral payloads that live only in memory (typing, presence). Event data never
travels here: a worker that hears "events reached N" reads them from PostgreSQL. So a
Redis restart loses nothing that matters: on every (re)connection `on_connected`
runs, and a worker then re-reads every stream position from the database and drops
its replicated caches (invalidations sent while it was away may be lost).

Bounds: at most MAX_QUEUED outgoing messages wait while Redis is unreachable; past
that the oldest are dropped and the next connection announces a resync, which makes
every worker catch up from the database the same way.
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
from redis.exceptions import RedisError

from homeserver.config.workers import RedisConfig

log = logging.getLogger(__name__)

MAX_QUEUED = 100_000
MAX_MESSAGE_BYTES = 1 << 20  # anything bigger on the channel is not ours: ignored
RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class RedisBus:
    """Publishes this process's messages in order; hands every other process's
    messages, in order, to `handler`; reconnects forever with a short backoff."""

    def __init__(self, config: RedisConfig, instance: str) -> None:
        self._config = config
        self.instance = instance
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._dropped = False
        self._tasks: list[asyncio.Task[None]] = []
        self._handler: Handler | None = None
        self._on_connected: Callable[[], Awaitable[None]] | None = None
        self.connected = asyncio.Event()
        # Waited for before each batch is published (the main's write barrier: what
        # was invalidated inside a transaction is told once that transaction committed).
        self.before_publish: Callable[[], Awaitable[None]] | None = None

    def _client(self) -> aioredis.Redis:
        c = self._config
        return aioredis.Redis(
            host=c.host,
            port=c.port,
            password=c.password,
            db=c.dbid,
            socket_connect_timeout=5,
            health_check_interval=10,
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
        message["o"] = self.instance
        self._queue.append(message)
        if len(self._queue) > MAX_QUEUED:
            self._queue.popleft()
            self._dropped = True
        self._wake.set()

    async def _publish_loop(self) -> None:
        attempt = 0
        while True:
            client = self._client()
            try:
                await client.ping()  # type: ignore[misc]
                attempt = 0
                if self._dropped:
                    self._dropped = False
                    self._queue.appendleft({"k": "resync", "o": self.instance})
                while True:
                    if not self._queue:
                        self._wake.clear()
                        await self._wake.wait()
                    if self.before_publish is not None:
                        await self.before_publish()
                    batch = list(self._queue)
                    async with client.pipeline(transaction=False) as pipe:
                        for message in batch:
                            pipe.publish(self._config.channel, json.dumps(message))
                        await pipe.execute()
                    for _ in batch:
                        self._queue.popleft()
            except (RedisError, OSError) as exc:
                # Unsent messages stay queued; the receivers' resync covers the gap.
                self._dropped = True
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
                        message = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(message, dict) and message.get("o") != self.instance:
                        await self._handler(message)
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
