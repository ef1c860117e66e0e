"""Worker settings, the nginx config rendered from the worker routes, the route table,
the follower applying what the bus carries, and the sharding function (issue 16)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from homeserver.app import resources_for_path
from homeserver.config import ConfigError, load_config
from homeserver.config.workers import shard
from homeserver.replication.follower import ReplicationFollower
from homeserver.replication.forward import served_here
from homeserver.replication.nginx import Upstreams, render
from homeserver.replication.writers import room_written, write_shard_key
from homeserver.storage.cache import LruCache, set_invalidation_hook
from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import StreamToken

PG = "database: {name: psycopg2, args: {user: u, database: d}}\n"
WORKER_BITS = (
    "redis: {enabled: true}\n"
    "instance_map: {main: {host: 127.0.0.1, port: 9093}}\n"
    "worker_replication_secret: 0123456789abcdef0123\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_sqlite_refuses_worker_settings_with_a_clear_message(tmp_path: Path) -> None:
    shared = write(tmp_path / "hs.yaml", "server_name: example.com\n" + WORKER_BITS)
    worker = write(tmp_path / "w1.yaml", "worker_app: generic_worker\nworker_name: reader1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(shared, worker)
    text = "\n".join(caught.value.problems)
    assert "workers need PostgreSQL" in text and "port-db" in text


def test_a_worker_reads_the_shared_file_and_its_own(tmp_path: Path) -> None:
    shared = write(
        tmp_path / "hs.yaml",
        "server_name: example.com\n" + PG + WORKER_BITS + "federation_sender_instances: [s1, s2]\n"
        "listeners: [{port: 8008, resources: [{names: [client]}]},"
        " {port: 9093, resources: [{names: [replication]}]}]\n",
    )
    worker = write(
        tmp_path / "w1.yaml",
        "worker_app: generic_worker\nworker_name: s2\n"
        "worker_listeners: [{port: 8101, resources: [{names: [federation]}]}]\n",
    )
    main = load_config(shared)
    assert not main.workers.is_worker and main.workers.replicated
    assert {lst.port for lst in main.listeners} == {8008, 9093}
    config = load_config(shared, worker)
    assert config.workers.is_worker and config.workers.worker_name == "s2"
    assert [lst.port for lst in config.listeners] == [8101]  # worker_listeners win
    assert config.workers.main is not None and config.workers.main.url == "http://127.0.0.1:9093"
    # Each destination is delivered by exactly one sender; the main delivers none.
    destinations = [f"server{i}.example" for i in range(200)]
    mine = {d for d in destinations if config.workers.sends_to(d)}
    assert 60 < len(mine) < 140  # about half
    assert not any(main.workers.sends_to(d) for d in destinations)


def test_pushers_and_the_appservice_sender_are_workers_named_in_the_shared_file(
    tmp_path: Path,
) -> None:
    shared = write(
        tmp_path / "hs.yaml",
        "server_name: example.com\n" + PG + WORKER_BITS + "pusher_instances: [p1, p2]\n"
        "notify_appservices_from_worker: as1\n",
    )
    main = load_config(shared).workers
    pusher = load_config(
        shared, write(tmp_path / "p2.yaml", "worker_app: generic_worker\nworker_name: p2\n")
    ).workers
    sender = load_config(
        shared, write(tmp_path / "as1.yaml", "worker_app: generic_worker\nworker_name: as1\n")
    ).workers
    users = [f"@u{i}:example.com" for i in range(200)]
    assert not any(main.pushes_for(u) for u in users)  # the main sends no notification
    assert 60 < sum(pusher.pushes_for(u) for u in users) < 140  # p2's half
    assert pusher.is_pusher and pusher.background_only and not main.sends_to_appservices
    assert (
        sender.sends_to_appservices and sender.background_only and not pusher.sends_to_appservices
    )


def test_event_persisters_shard_rooms_and_need_a_replication_listener(tmp_path: Path) -> None:
    shared = write(
        tmp_path / "hs.yaml",
        "server_name: example.com\n" + PG + "redis: {enabled: true}\n"
        "worker_replication_secret: 0123456789abcdef0123\n"
        "instance_map: {main: {port: 9093}, ep1: {port: 9101}, ep2: {port: 9102}}\n"
        "stream_writers: {events: [ep1, ep2]}\n",
    )
    main = load_config(shared).workers
    rooms = [f"!r{i}:example.com" for i in range(200)]
    writers = [main.room_writer(r) for r in rooms]
    assert set(writers) == {"ep1", "ep2"} and 60 < writers.count("ep1") < 140
    assert main.shared_writers and not main.is_event_persister
    good = write(
        tmp_path / "ep1.yaml",
        "worker_app: generic_worker\nworker_name: ep1\n"
        "worker_listeners: [{port: 9101, resources: [{names: [replication]}]}]\n",
    )
    persister = load_config(shared, good).workers
    assert persister.is_event_persister and persister.background_only
    assert [persister.room_writer(r) for r in rooms] == writers  # every process agrees
    bad = write(tmp_path / "ep2.yaml", "worker_app: generic_worker\nworker_name: ep2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(shared, bad)
    assert "replication" in "\n".join(caught.value.problems)
    for wrong, problem in (
        ("stream_writers: {events: [ep1, ep3]}\n", "instance_map.ep3"),
        ("stream_writers: {un_partial_stated_room: [ep1]}\n", "stream_writers.un_partial"),
        ("stream_writers: {presence: [ep1, ep2]}\n", "presence has one writer"),
        ("stream_writers: {events: [ep1, ep1]}\n", "names a process twice"),
    ):
        text = shared.read_text(encoding="utf-8").replace(
            "stream_writers: {events: [ep1, ep2]}\n", wrong
        )
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path / "wrong.yaml", text))
        assert problem in "\n".join(caught.value.problems), wrong


def test_a_media_worker_runs_the_media_jobs_when_named(tmp_path: Path) -> None:
    """`media_instance_running_background_jobs` moves expiry and media_retention off
    the main, to a worker serving media (whose disk holds the store); every process
    still writes its own reads' access times behind."""
    shared = write(
        tmp_path / "hs.yaml",
        "server_name: example.com\n"
        + PG
        + WORKER_BITS
        + "media_instance_running_background_jobs: media1\n",
    )
    main = load_config(shared).workers
    assert not main.runs_media_jobs
    media1 = write(
        tmp_path / "media1.yaml",
        "worker_app: generic_worker\nworker_name: media1\n"
        "worker_listeners: [{port: 8301, resources: [{names: [media]}]}]\n",
    )
    assert load_config(shared, media1).workers.runs_media_jobs
    media2 = write(tmp_path / "media2.yaml", media1.read_text().replace("media1", "media2"))
    assert not load_config(shared, media2).workers.runs_media_jobs
    # The default: the main, as before.
    plain = write(tmp_path / "plain.yaml", "server_name: example.com\n" + PG + WORKER_BITS)
    assert load_config(plain).workers.runs_media_jobs
    assert not load_config(plain, media1).workers.runs_media_jobs
    # Named, but serving no media: refused (its disk need not hold the store).
    reader = write(
        tmp_path / "media1b.yaml",
        "worker_app: generic_worker\nworker_name: media1\n"
        "worker_listeners: [{port: 8101, resources: [{names: [client]}]}]\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(shared, reader)
    assert any("media_instance_running_background_jobs" in p for p in caught.value.problems)
    # Without workers it would silently run no job: refused, as the other roles.
    alone = write(
        tmp_path / "alone.yaml",
        "server_name: example.com\n" + PG + "media_instance_running_background_jobs: m1\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(alone)
    assert "redis.enabled" in "\n".join(caught.value.problems)


def test_media_workers_serve_the_media_admin_api() -> None:
    """The admin API's media endpoints read and delete the store's files: a media
    worker serves them and nginx sends them there; the rest of the admin API stays
    with the main."""
    a = "/_synapse/admin/v1"
    media_admin = [
        ("GET", f"{a}/media/example.com/abc"),
        ("DELETE", f"{a}/media/example.com/abc"),
        ("POST", f"{a}/media/quarantine/example.com/abc"),
        ("POST", f"{a}/media/protect/abc"),
        ("POST", f"{a}/media/delete"),
        ("POST", f"{a}/media/example.com/delete"),
        ("POST", f"{a}/purge_media_cache"),
        ("POST", f"{a}/user/@u:example.com/media/quarantine"),
        ("GET", f"{a}/users/@u:example.com/media"),
        ("DELETE", f"{a}/users/@u:example.com/media"),
    ]
    for method, path in media_admin:
        assert served_here(method, path, serves_media=True), path
        assert not served_here(method, path), path  # a client reader forwards it
    others = [
        ("GET", "/_synapse/admin/v2/users/@u:example.com"),
        ("GET", f"{a}/users/@u:example.com/joined_rooms"),
        ("POST", f"{a}/purge_media_cache_and_more"),
        ("GET", f"{a}/rooms/!r:example.com/media"),
        ("GET", f"{a}/users/@u:example.com/mediafoo"),
    ]
    for method, path in others:
        assert not served_here(method, path, serves_media=True), path
    text = render(Upstreams(main="127.0.0.1:8008", media=["127.0.0.1:8301"]))
    routes = [
        line.split('"')[1].removeprefix("~")
        for line in text.splitlines()
        if line.strip().startswith('"~') and line.rstrip().endswith(" media;")
    ]
    assert len(routes) == 2
    for method, path in media_admin:
        assert any(re.match(r, f"{method} {path}") for r in routes), path
    for method, path in others:
        assert not any(re.match(r, f"{method} {path}") for r in routes), path


def nginx_backend(text: str, method: str, path: str) -> str:
    """The upstream nginx picks for a request: the first regex of the map that matches
    (nginx's rule for regexes in a `map`), else the default."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('"~'):
            pattern, backend = line.split('"')[1].removeprefix("~"), line.split()[-1]
            if re.match(pattern, f"{method} {path}"):
                return backend.rstrip(";")
    return "main"


def test_other_servers_media_downloads_go_to_the_media_workers() -> None:
    """/_matrix/federation/v1/media/... reads the media store: with media workers,
    nginx sends it there (before the federation inbound workers' catch-all), a media
    listener serves it, and the rest of the federation API stays where it was."""
    text = render(
        Upstreams(
            main="127.0.0.1:8008",
            federation_inbound=["127.0.0.1:8201"],
            media=["127.0.0.1:8301"],
        )
    )
    fed_media = [
        "/_matrix/federation/v1/media/download/abc",
        "/_matrix/federation/v1/media/thumbnail/abc",
    ]
    for path in fed_media:
        assert nginx_backend(text, "GET", path) == "media", path
        assert served_here("GET", path, serves_media=True), path
        assert resources_for_path(path) == {"federation", "media"}, path
    for path in ["/_matrix/federation/v1/event/$e", "/_matrix/federation/v1/mediafoo/x"]:
        assert nginx_backend(text, "GET", path) == "federation_inbound", path
        assert resources_for_path(path) == {"federation"}, path
    assert nginx_backend(text, "GET", "/_matrix/key/v2/server") == "federation_inbound"
    # Without media workers, the federation inbound workers serve them as before.
    text = render(Upstreams(main="127.0.0.1:8008", federation_inbound=["127.0.0.1:8201"]))
    assert nginx_backend(text, "GET", fed_media[0]) == "federation_inbound"


@pytest.mark.parametrize(
    "extra",
    [
        "pusher_instances: [p1]\n",
        "notify_appservices_from_worker: as1\n",
        "federation_sender_instances: [s1]\n",
    ],
)
def test_background_roles_without_workers_are_refused(tmp_path: Path, extra: str) -> None:
    """Naming a worker to do the main's sending, on a server with no workers, would
    silently send nothing: refused."""
    shared = write(tmp_path / "hs.yaml", "server_name: example.com\n" + PG + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(shared)
    assert "redis.enabled" in "\n".join(caught.value.problems)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("redis: {enabled: false}\n", "redis.enabled"),
        ("instance_map: {}\n", "instance_map.main"),
        ("worker_replication_secret: short\n", "worker_replication_secret"),
        ("worker_app: nonsense\n", "worker_app"),
    ],
)
def test_incomplete_worker_settings_are_named(tmp_path: Path, extra: str, problem: str) -> None:
    shared = write(tmp_path / "hs.yaml", "server_name: example.com\n" + PG + WORKER_BITS)
    worker = write(tmp_path / "w.yaml", "worker_app: generic_worker\nworker_name: r1\n" + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(shared, worker)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_worker_listeners_without_worker_app_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hs.yaml",
        "server_name: example.com\nworker_listeners: [{port: 1, resources: [{names: [client]}]}]\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any("worker_listeners" in p for p in caught.value.problems)


def test_workers_serve_reads_and_forward_writes() -> None:
    c = "/_matrix/client/v3"
    assert served_here("GET", f"{c}/sync")
    assert served_here("GET", f"{c}/rooms/!a:b/messages")
    assert served_here("POST", f"{c}/search")
    assert served_here("GET", "/_matrix/federation/v1/event/$e")
    assert not served_here("PUT", f"{c}/rooms/!a:b/send/m.room.message/t1")
    assert not served_here("POST", f"{c}/createRoom")
    assert not served_here("POST", f"{c}/login")
    assert not served_here("GET", "/_synapse/admin/v2/users/@a:b")  # admin: the main
    assert not served_here("PUT", "/_matrix/federation/v1/send/123")
    assert not served_here("GET", f"{c}/rooms/!a:b/messages/../../../../_synapse/admin")
    # What needs another server too: each reader has a federation client of its own.
    assert served_here("GET", f"{c}/profile/%40u%3Aelsewhere/displayname")
    assert served_here("GET", f"{c}/directory/room/%23x%3Aelsewhere")
    assert served_here("GET", f"{c}/rooms/!a:b/hierarchy")
    assert served_here("POST", f"{c}/publicRooms")


def test_room_writes_name_their_room() -> None:
    c = "/_matrix/client/v3"
    assert room_written("PUT", f"{c}/rooms/%21a%3Ab/send/m.room.message/t1") == "!a:b"
    assert room_written("PUT", f"{c}/rooms/!a:b/state/m.room.topic") == "!a:b"
    assert room_written("PUT", f"{c}/rooms/!a:b/state/m.room.member/%40u%3Ab") == "!a:b"
    assert room_written("POST", f"{c}/rooms/!a:b/invite") == "!a:b"
    assert room_written("POST", f"{c}/join/%21a%3Ab") == "!a:b"
    assert room_written("POST", f"{c}/join/%23alias%3Ab") is None  # by token: below
    assert room_written("GET", f"{c}/rooms/!a:b/state/m.room.topic") is None
    assert room_written("POST", f"{c}/rooms/!a:b/upgrade") == "!a:b"  # the old room
    assert room_written("POST", f"{c}/createRoom") is None
    f = "/_matrix/federation"
    assert room_written("GET", f"{f}/v1/make_join/%21a%3Ab/%40u%3Ac?ver=12") == "!a:b"
    assert room_written("PUT", f"{f}/v2/send_join/!a:b/$e") == "!a:b"
    assert room_written("PUT", f"{f}/v1/send_leave/!a:b/$e") == "!a:b"
    assert room_written("PUT", f"{f}/v1/send_knock/!a:b/$e") == "!a:b"
    assert room_written("PUT", f"{f}/v2/invite/!a:b/$e") == "!a:b"
    assert room_written("PUT", f"{f}/v1/exchange_third_party_invite/!a:b") == "!a:b"
    assert room_written("PUT", f"{f}/v1/send/txn1") is None  # replication/federation.py
    assert room_written("GET", f"{f}/v1/state/!a:b") is None


def test_the_nginx_config_routes_reads_to_readers_and_the_rest_to_main() -> None:
    text = render(
        Upstreams(
            main="127.0.0.1:8008",
            client_readers=["127.0.0.1:8101", "127.0.0.1:8102"],
            federation_inbound=["127.0.0.1:8201"],
        ),
        listen="127.0.0.1:80",
    )
    assert "upstream client_readers {\n        hash $hs_sticky consistent;" in text
    assert "server 127.0.0.1:8102 max_fails=0;" in text
    assert '"~^GET /_matrix/client/(?:r0|v3|v1|unstable(?:/[^/]+)?)/sync$" client_readers;' in text
    assert '"~^[A-Z]+ /_matrix/federation/" federation_inbound;' in text
    assert "default main;" in text and "proxy_pass http://$hs_backend;" in text
    assert "/send|state|redact" not in text  # without persisters room writes go to main
    routed = render(
        Upstreams(
            main="127.0.0.1:8008",
            client_readers=["127.0.0.1:8101"],
            room_writes_to_readers=True,
        )
    )
    assert (
        '"~^PUT /_matrix/client/(?:r0|v3|unstable)/rooms/([^/]+)/(?:send|state|redact)/"' in routed
    )
    # Room creation and profile changes too: a persister (picked by the token) writes.
    assert (
        '"~^PUT /_matrix/client/(?:r0|v3|unstable)/profile/[^/]+/[^/]+$" client_readers;' in routed
    )
    assert '"~^POST /_matrix/client/(?:r0|v3|unstable)/createRoom$" client_readers;' in routed
    assert "createRoom" not in text
    create = "/_matrix/client/v3/createRoom"
    assert write_shard_key("POST", create, "Bearer a") == "token Bearer a"
    profile = "/_matrix/client/v3/profile/%40a%3Ax/displayname"
    assert write_shard_key("PUT", profile, "Bearer a") == "token Bearer a"
    assert write_shard_key("GET", profile, "Bearer a") is None  # a read
    assert write_shard_key("POST", "/_matrix/client/v3/rooms/!r:x/upgrade", "t") == "!r:x"
    for alias in ("%23club%3Ax", "#club:x"):  # a join or knock by alias: by token
        for verb in ("join", "knock"):
            path = f"/_matrix/client/v3/{verb}/{alias}"
            assert write_shard_key("POST", path, "Bearer a") == "token Bearer a"
    assert '"~^POST /_matrix/client/(?:r0|v3|unstable)/(?:join|knock)/(?:#|%23)' in routed
    assert write_shard_key("POST", create, None) is None  # unauthenticated: any process
    assert write_shard_key("GET", create, "Bearer a") is None
    assert write_shard_key("PUT", "/_matrix/client/v3/rooms/%21r%3Ax/send/m/1", "t") == "!r:x"


class _Store:
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    async def events_after(self, since: int, upto: int, limit: int) -> list[Any]:
        rows = [e for e in self.events if since < e[1] <= upto]
        return rows[:limit]


class _Event:
    def __init__(self, event_id: str, room_id: str) -> None:
        self.event_id, self.room_id = event_id, room_id
        self.type, self.state_key = "m.room.message", None


class _Listener:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_new_event(self, event: Any, stream_ordering: int) -> None:
        self.seen.append(stream_ordering)


async def test_the_follower_takes_in_events_invalidations_and_resyncs() -> None:
    notifier = Notifier(StreamToken(events=0))
    events = [(_Event(f"$e{i}", "!r:x"), i, False) for i in range(1, 1201)]
    listener = _Listener()

    async def position() -> int:
        return 1200

    follower = ReplicationFollower(
        notifier,
        _Store(events),  # type: ignore[arg-type]
        [listener],
        [],
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        {"events": position},
    )
    await follower.handle({"k": "pos", "s": "events", "p": 700})
    assert listener.seen == list(range(1, 701))  # in batches, in order, each once
    assert notifier.current.events == 700
    waiting = asyncio.ensure_future(follower.wait_for(StreamToken(events=1200), 5))
    await asyncio.sleep(0)
    assert not waiting.done()
    cache: LruCache[tuple[str, str], int] = LruCache(10, "test_follower_cache")
    cache.set(("@a:x", "D"), 1)
    set_invalidation_hook(None)
    await follower.handle({"k": "inv", "c": "test_follower_cache", "keys": [["@a:x", "D"]]})
    assert cache.get(("@a:x", "D")) is None  # JSON lists are tuple keys again
    cache.set(("@b:x", "D"), 2)
    await follower.connected()  # a (re)connection: caches dropped, the gap read
    assert cache.get(("@b:x", "D")) is None
    assert listener.seen == list(range(1, 1201))
    assert await waiting is True
    await follower.handle({"k": "pos", "s": "events", "p": "nonsense"})  # ignored
    await follower.handle({"k": "pos", "s": "no_such_stream", "p": 5})
    assert notifier.current.events == 1200


def test_sharding_is_stable_and_spread() -> None:
    assert shard("matrix.org", 4) == shard("matrix.org", 4)
    counts = [0, 0, 0, 0]
    for i in range(4000):
        counts[shard(f"server{i}", 4)] += 1
    assert min(counts) > 850


async def test_a_main_without_a_federation_listener_still_takes_what_inbound_workers_hand_it(
    tmp_path: Path,
) -> None:
    """Federation may be served by the inbound workers alone: the main still needs the
    federation adapter (the EDUs they hand it, delivery without federation senders)."""
    from contextlib import AsyncExitStack
    from types import SimpleNamespace

    from federation.keys import ServerKeys
    from homeserver.app import create_app
    from homeserver.composition_federation import Overrides, build_federation
    from homeserver.events.signing import generate_signing_key
    from homeserver.replication.federation import EDUS_PATH, EVENTS_PATH

    shared = write(
        tmp_path / "hs.yaml",
        "server_name: example.com\n" + PG + WORKER_BITS + "signing_key_path: k\n"
        "listeners: [{port: 8008, resources: [{names: [client]}]},"
        " {port: 9093, resources: [{names: [replication]}]}]\n",
    )
    config = load_config(shared)
    assert "federation" not in config.resources
    keys = ServerKeys("example.com", (generate_signing_key("a"),), {})
    rooms = SimpleNamespace(get_room_version=None)
    stores = SimpleNamespace(transactions=None, events=None, server_keys=None, rooms=rooms)
    async with AsyncExitStack() as stack:
        fed = build_federation(config, keys, stores, stack, Overrides())  # type: ignore[arg-type]
        assert fed is not None and fed.sender is not None
    routes = {r.resource.canonical for r in create_app(config).router.routes() if r.resource}
    assert {EDUS_PATH, EVENTS_PATH} <= routes
