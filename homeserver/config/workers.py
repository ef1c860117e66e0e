"""Worker settings: which process this is, where the others are, and the Redis bus.

Synapse's keys, so a deployment's files read the same: `worker_app`, `worker_name`,
`instance_map` (name -> host/port of each process's `replication` listener), `redis`,
`worker_replication_secret` (or `_path`), and `worker_listeners` (a worker's listeners,
used instead of `listeners`). One file is shared by every process; each worker adds a
small file of its own (`-c homeserver.yaml -c worker1.yaml`; later files win per key).

Why SQLite refuses them: its single file is written by one process; a second process
would need the locking, stream allocation and cache coherence that PostgreSQL and the
Redis bus provide, so the combination is a configuration error, not a slow mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from homeserver.config.reader import Reader

WORKER_KEYS = frozenset(
    {
        "worker_app",
        "worker_name",
        "worker_listeners",
        "instance_map",
        "redis",
        "worker_replication_secret",
        "worker_replication_secret_path",
        "federation_sender_instances",
        "pusher_instances",
        "notify_appservices_from_worker",
        "stream_writers",
        "media_instance_running_background_jobs",
    }
)

# Synapse's names for a worker process; all of them run the same generic worker here.
WORKER_APPS = frozenset({"generic_worker", "synapse.app.generic_worker", "homeserver.worker"})
MAIN = "main"
# The streams besides events that client readers may write (`stream_writers`).
READER_STREAMS = (
    "account_data",
    "to_device",
    "receipts",
    "push_rules",
    "device_lists",
    "typing",
    "presence",
)
# The reader streams other servers send EDUs for (typing, receipts, to-device messages,
# device-list updates, presence): a writer of one of them also writes those EDUs, handed
# to it over its replication listener by the federation inbound workers.
EDU_STREAMS = frozenset({"to_device", "receipts", "device_lists", "typing", "presence"})
# Streams with one writer: presence (its timers and positions live in the writer's
# memory). Named for a worker, the main no longer writes it: it reports to the writer.
SINGLE_WRITER_STREAMS = frozenset({"presence"})


def shard(key: str, count: int) -> int:
    """Which of `count` processes owns `key`: stable across processes and restarts."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class InstanceLocation:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class RedisConfig:
    enabled: bool = False
    host: str = "localhost"
    port: int = 6379
    password: str | None = None
    dbid: int = 0
    # Pub/sub channel: several deployments may share one Redis server.
    channel: str = "homeserver"


@dataclass(frozen=True)
class WorkersConfig:
    worker_app: str | None = None
    worker_name: str = MAIN
    instance_map: Mapping[str, InstanceLocation] = field(
        default_factory=lambda: MappingProxyType({})
    )
    redis: RedisConfig = RedisConfig()
    replication_secret: str | None = None
    # Processes delivering outbound federation, destinations sharded by hash; empty:
    # the main delivers.
    federation_sender_instances: tuple[str, ...] = ()
    # Processes sending to push gateways, users sharded by hash; empty: the main.
    pusher_instances: tuple[str, ...] = ()
    # The one process sending transactions to appservices; None: the main.
    appservice_sender: str | None = None
    # Event persisters (`stream_writers: {events: [...]}`): room writes are routed to
    # them by sha256(room_id) mod N; empty: the main writes every room.
    event_persisters: tuple[str, ...] = ()
    # Client readers that write a stream themselves (`stream_writers: {account_data:
    # [...], to_device: [...], receipts: [...], push_rules: [...], device_lists:
    # [...], typing: [...]}`), by stream: a reader named for a stream serves that stream's writes
    # instead of forwarding them to the main (which writes every stream too). Streams
    # are those of READER_STREAMS.
    reader_writers: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # The process expiring unused media reservations and applying media_retention
    # (`media_instance_running_background_jobs`, Synapse's key): a media worker, so
    # the main need not reach the media store.
    media_jobs_instance: str = MAIN

    @property
    def is_federation_sender(self) -> bool:
        return self.worker_name in self.federation_sender_instances

    @property
    def is_pusher(self) -> bool:
        return self.worker_name in self.pusher_instances

    def pushes_for(self, user_id: str) -> bool:
        """Whether this process sends `user_id`'s push notifications (sha256 mod N)."""
        pushers = self.pusher_instances
        if not pushers:
            return not self.is_worker
        return pushers[shard(user_id, len(pushers))] == self.worker_name

    @property
    def sends_to_appservices(self) -> bool:
        """Whether this process runs the appservice sender (exactly one process does)."""
        if self.appservice_sender is None:
            return not self.is_worker
        return self.appservice_sender == self.worker_name

    @property
    def runs_media_jobs(self) -> bool:
        """Whether this process runs the media repository's background jobs."""
        return self.worker_name == self.media_jobs_instance

    @property
    def is_event_persister(self) -> bool:
        return self.worker_name in self.event_persisters

    def writers_of(self, stream: str) -> tuple[str, ...]:
        """The workers named as writers of reader stream `stream` (the main not listed)."""
        return self.reader_writers.get(stream, ())

    def writes(self, stream: str) -> bool:
        """Whether this process writes reader stream `stream` itself (the main always,
        but a single-writer stream only when no worker is named for it)."""
        if stream in SINGLE_WRITER_STREAMS:
            return self.worker_name == self.single_writer(stream)
        return not self.is_worker or self.worker_name in self.writers_of(stream)

    def single_writer(self, stream: str) -> str:
        """The one process writing a SINGLE_WRITER_STREAMS stream: the worker named for
        it, else the main."""
        named = self.writers_of(stream)
        return named[0] if named else MAIN

    @property
    def account_data_writers(self) -> tuple[str, ...]:
        return self.writers_of("account_data")

    @property
    def to_device_writers(self) -> tuple[str, ...]:
        return self.writers_of("to_device")

    @property
    def receipts_writers(self) -> tuple[str, ...]:
        return self.writers_of("receipts")

    @property
    def writes_account_data(self) -> bool:
        """Whether this process writes account data itself (the main always does)."""
        return self.writes("account_data")

    @property
    def writes_to_device(self) -> bool:
        """Whether this process writes to-device messages itself (the main always does)."""
        return self.writes("to_device")

    @property
    def writes_receipts(self) -> bool:
        """Whether this process writes read receipts itself (the main always does)."""
        return self.writes("receipts")

    @property
    def reader_streams(self) -> frozenset[str]:
        """The streams besides events that this worker writes itself (none on the
        main, which writes them all): what it serves instead of forwarding, and what
        it announces on the bus."""
        if not self.is_worker:
            return frozenset()
        return frozenset(s for s in READER_STREAMS if self.worker_name in self.writers_of(s))

    @property
    def shared_writers(self) -> bool:
        """Several processes write streams (events and READER_STREAMS): every write
        transaction of the deployment takes one PostgreSQL lock, each room
        write a lock of its room, and every process follows the event stream
        (homeserver.replication.writers)."""
        return bool(self.event_persisters or any(self.reader_writers.values()))

    def room_writer(self, room_id: str) -> str:
        """The process that room `room_id`'s writes are routed to (sha256 mod N)."""
        persisters = self.event_persisters
        if not persisters:
            return MAIN
        return persisters[shard(room_id, len(persisters))]

    def room_writer_url(self, room_id: str) -> str | None:
        """The replication URL of the event persister writing `room_id` (None: the
        main writes it)."""
        if not self.event_persisters:
            return None
        return str(self.instance_map[self.room_writer(room_id)].url)

    @property
    def background_only(self) -> bool:
        """A worker that serves no public traffic (its listeners are for health checks):
        federation senders, pushers, the appservice sender, event persisters (these
        serve only the room writes others route to their replication listener)."""
        return self.is_worker and (
            self.is_federation_sender
            or self.is_pusher
            or self.appservice_sender == self.worker_name
            or self.is_event_persister
        )

    def sends_to(self, destination: str) -> bool:
        """Whether this process delivers to `destination` (sha256 mod N, as Synapse)."""
        senders = self.federation_sender_instances
        if not senders:
            return not self.is_worker
        return senders[shard(destination, len(senders))] == self.worker_name

    @property
    def is_worker(self) -> bool:
        return self.worker_app is not None

    @property
    def replicated(self) -> bool:
        """True for every process of a deployment with workers (main included)."""
        return self.redis.enabled

    @property
    def main(self) -> InstanceLocation | None:
        return self.instance_map.get(MAIN)


def read_workers(r: Reader, top: Mapping[str, Any], is_postgres: bool) -> WorkersConfig:
    app = r.str(top, "worker_app", "")
    if app is not None and app not in WORKER_APPS:
        r.problem("worker_app", f"expected one of {', '.join(sorted(WORKER_APPS))}, got {app!r}")
        app = None
    name = r.str(top, "worker_name", "", None)
    if app is not None and not name:
        r.problem("worker_name", "required for a worker (its name in instance_map)")
    if app is None and name not in (None, MAIN):
        r.problem("worker_name", "set only for workers (with worker_app); the main is 'main'")

    instances: dict[str, InstanceLocation] = {}
    raw_map = r.mapping(top.get("instance_map"), "instance_map") or {}
    for inst, loc in raw_map.items():
        where = f"instance_map.{inst}"
        m = r.mapping(loc, where)
        if m is None:
            continue
        r.check_keys(m, {"host", "port", "tls"}, where)
        if r.bool(m, "tls", where, False):
            r.problem(f"{where}.tls", "replication runs over plain HTTP on a private network")
        host = r.str(m, "host", where, "localhost")
        port = r.int(m, "port", where, 0, 1, 65535)
        if not port:
            r.problem(f"{where}.port", "required")
        instances[str(inst)] = InstanceLocation(host, port)

    redis = RedisConfig()
    raw_redis = r.mapping(top.get("redis"), "redis")
    if raw_redis is not None:
        r.check_keys(raw_redis, {"enabled", "host", "port", "password", "dbid", "channel"}, "redis")
        redis = RedisConfig(
            enabled=r.bool(raw_redis, "enabled", "redis", False),
            host=r.str(raw_redis, "host", "redis", "localhost"),
            port=r.int(raw_redis, "port", "redis", 6379, 1, 65535),
            password=r.str(raw_redis, "password", "redis"),
            dbid=r.int(raw_redis, "dbid", "redis", 0, 0, 1 << 16),
            channel=r.str(raw_redis, "channel", "redis", "homeserver"),
        )

    secret = r.str(top, "worker_replication_secret", "")
    secret_path = r.path(top, "worker_replication_secret_path", "", None)
    if secret_path is not None:
        try:
            secret = secret_path.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            r.problem("worker_replication_secret_path", f"cannot read: {exc.strerror}")

    senders = tuple(r.str_list(top, "federation_sender_instances", "") or ())
    pushers = tuple(r.str_list(top, "pusher_instances", "") or ())
    appservice_sender = r.str(top, "notify_appservices_from_worker", "")
    media_jobs = r.str(top, "media_instance_running_background_jobs", "", MAIN) or MAIN
    persisters: tuple[str, ...] = ()
    reader_writers: dict[str, tuple[str, ...]] = {}
    raw_writers = r.mapping(top.get("stream_writers"), "stream_writers") or {}
    for stream, writers in raw_writers.items():
        names = writers if isinstance(writers, list) else [writers]
        if not all(isinstance(n, str) and n for n in names):
            r.problem(f"stream_writers.{stream}", "expected a process name or a list of them")
        elif stream == "events":
            persisters = tuple(names) if names != [MAIN] else ()
        elif stream in READER_STREAMS:
            # The main writes these streams anyway: only the workers are listed.
            named = tuple(n for n in names if n != MAIN)
            if named:
                reader_writers[stream] = named
        elif names != [MAIN]:
            r.problem(
                f"stream_writers.{stream}",
                "only the events, "
                + ", ".join(READER_STREAMS)
                + " streams have writers other than the main here",
            )
    for key, named in (
        ("federation_sender_instances", senders),
        ("pusher_instances", pushers),
        ("stream_writers.events", persisters),
        *((f"stream_writers.{s}", names) for s, names in reader_writers.items()),
    ):
        if len(set(named)) != len(named):
            r.problem(key, "names a process twice")
    for stream in sorted(SINGLE_WRITER_STREAMS & reader_writers.keys()):
        if len(reader_writers[stream]) > 1:
            r.problem(
                f"stream_writers.{stream}",
                f"{stream} has one writer: name one worker (or the main)",
            )
    if MAIN in persisters:
        r.problem("stream_writers.events", "name only persisters: the main writes no room then")
    config = WorkersConfig(
        federation_sender_instances=senders,
        pusher_instances=pushers,
        appservice_sender=appservice_sender or None,
        event_persisters=persisters,
        reader_writers=MappingProxyType(reader_writers),
        worker_app=app,
        worker_name=name or MAIN,
        instance_map=MappingProxyType(instances),
        redis=redis,
        replication_secret=secret,
        media_jobs_instance=media_jobs,
    )
    delegated = (
        senders
        or pushers
        or appservice_sender
        or persisters
        or reader_writers
        or media_jobs != MAIN
    )
    if not (config.is_worker or config.replicated or instances or delegated):
        return config
    if not is_postgres:
        r.problem(
            "worker_app" if config.is_worker else "redis",
            "workers need PostgreSQL (database.name: psycopg2): an SQLite database is "
            "written by one process; remove the worker settings or port the database "
            "with `python -m homeserver port-db`",
        )
    if not redis.enabled:
        r.problem("redis.enabled", "workers need the Redis bus: set redis.enabled: true")
    else:
        import importlib.util

        if importlib.util.find_spec("redis") is None:
            r.problem("redis", "needs the redis package: pip install 'homeserver[workers]'")
    if MAIN not in instances:
        r.problem("instance_map.main", "required: where workers reach the main process")
    for name in persisters:
        if name not in instances:
            r.problem(f"instance_map.{name}", "required: where room writes reach this persister")
    for name in sorted({n for s in EDU_STREAMS for n in reader_writers.get(s, ())}):
        if name not in instances and name not in persisters:
            r.problem(
                f"instance_map.{name}",
                "required: where federation inbound workers hand this stream writer the "
                "EDUs other servers send for its streams (typing, receipts, to-device, "
                "device lists, presence) and other processes report presence",
            )
    if not secret or len(secret) < 16:
        r.problem(
            "worker_replication_secret",
            "required (at least 16 characters): it authenticates process-to-process requests",
        )
    return config
