"""The worker deployment under load and faults (issue 16), through nginx and directly.

Two deployments in turn (tests/deployment.py): PostgreSQL, Redis, the main, two client
readers, a federation inbound worker, a media worker, nginx; then the same with a
federation sender and two event persisters (the seven-process layout, where room
writes go to the persisters and the main's death leaves sends working). What must
hold in both:
- a write sent to a reader is forwarded to the main, and the reader answers only once it
  has caught up with it (read-your-writes on the same process);
- a logged-out token stops working on every process at once (replicated invalidation);
- the replication listener refuses requests without the secret;
- many senders and long-polling clients on both readers: every acknowledged event is
  seen exactly once by every client, across a SIGKILL and restart of a reader, of the
  main (the only writer: forwarded writes fail cleanly with 502 meanwhile, readers keep
  answering syncs) and across a Redis restart; and each message counts once in every
  client's unread notifications, on every process.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from homeserver.__main__ import registration_mac
from tests.deployment import FULL_LAYOUT, Deployment, require_parts

SENDERS = 4
SECRET = "workers-test-registration-secret"
MESSAGES_PER_SENDER = 40


@pytest.fixture(scope="module", params=["main_writes", "event_persisters"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The main writing every room; then the seven-process layout (two event
    persisters write the rooms) with a media worker: the same faults hold for both."""
    require_parts()
    layout = dict(FULL_LAYOUT) if request.param == "event_persisters" else {}
    d = Deployment(
        Path(tmp_path_factory.mktemp("workers")),
        media_workers=1,
        overrides={
            "registration_shared_secret": SECRET,
            # Expiry and media_retention on the media worker, not the main.
            "media_instance_running_background_jobs": "media_repository1",
        },
        **layout,
    ).start()
    try:
        yield d
    finally:
        d.stop()


def port_url(d: Deployment, name: str) -> str:
    return f"http://127.0.0.1:{d.processes[name].port}"


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str = "") -> None:
        self.session, self.base, self.token = session, base, token
        self.user_id = self.device_id = ""

    async def call(
        self, method: str, path: str, body: Any = None, *, base: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, (base or self.base) + path, json=body, headers=headers
        ) as r:
            text = await r.text()
            assert r.content_type == "application/json", (r.status, text[:200])
            return r.status, json.loads(text)

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = await self.call(method, path, body, **kw)
        assert status == 200, (method, path, status, data)
        return data


async def register(session: aiohttp.ClientSession, base: str) -> Client:
    client = Client(session, base)
    data = await client.ok(
        "POST",
        "/_matrix/client/v3/register",
        {
            "username": f"w{secrets.token_hex(5)}",
            "password": "pw",
            "auth": {"type": "m.login.dummy"},
        },
    )
    client.token, client.user_id = data["access_token"], data["user_id"]
    client.device_id = data["device_id"]
    return client


async def test_a_write_sent_to_a_reader_is_forwarded_and_read_back_at_once(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    reader = port_url(deployment, "client_reader1")
    alice = await register(session, reader)  # forwarded: the main registers
    room = (await alice.ok("POST", "/_matrix/client/v3/createRoom", {"name": "fwd"}))["room_id"]
    for i in range(20):
        event_id = (
            await alice.ok(
                "PUT",
                f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}",
                {"msgtype": "m.text", "body": f"n{i}"},
            )
        )["event_id"]
        # The same reader answers with the event at once (it waited for its follower).
        event = await alice.ok("GET", f"/_matrix/client/v3/rooms/{room}/event/{event_id}")
        assert event["content"]["body"] == f"n{i}"
        state = await alice.ok("GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.name")
        assert state == {"name": "fwd"}
    # The name changed through the other reader is read back there too.
    other = Client(session, port_url(deployment, "client_reader2"), alice.token)
    await other.ok("PUT", f"/_matrix/client/v3/rooms/{room}/state/m.room.name", {"name": "two"})
    assert await other.ok("GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.name") == {
        "name": "two"
    }


async def test_a_logged_out_token_is_refused_by_every_process(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    bob = await register(session, deployment.url)
    readers = [port_url(deployment, n) for n in ("client_reader1", "client_reader2")]
    for base in readers:  # cached as valid on both readers
        assert (await bob.ok("GET", "/_matrix/client/v3/account/whoami", base=base))[
            "user_id"
        ] == bob.user_id
    await bob.ok("POST", "/_matrix/client/v3/logout", {}, base=port_url(deployment, "main"))
    for base in readers:
        for _ in range(50):  # the invalidation travels over Redis: milliseconds
            status, body = await bob.call("GET", "/_matrix/client/v3/account/whoami", base=base)
            if status == 401:
                break
            await asyncio.sleep(0.02)
        assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN", (base, status, body)


async def test_the_replication_listener_needs_the_secret(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    main = deployment.processes["main"]
    replication = None
    import yaml

    config = yaml.safe_load((deployment.workdir / "homeserver.yaml").read_text())
    replication = config["instance_map"]["main"]["port"]
    assert replication != main.port
    for headers in ({}, {"X-Replication-Secret": "wrong" * 8}):
        async with session.get(
            f"http://127.0.0.1:{replication}/_matrix/client/versions", headers=headers
        ) as r:
            assert r.status == 403
            assert (await r.json())["errcode"] == "M_FORBIDDEN"
        async with session.post(
            f"http://127.0.0.1:{replication}/_replication/presence",
            json={"process": "intruder", "syncing": {"@x:localhost": "online"}},
            headers=headers,
        ) as r:
            assert r.status == 403
    # nginx never routes to it: the public address does not serve the internal path.
    async with session.post(deployment.url + "/_replication/presence", json={}) as r:
        assert r.status == 404


async def _sync_collector(
    client: Client,
    room: str,
    since: str,
    seen: list[str],
    stop: asyncio.Event,
    bases: list[str],
) -> None:
    """Long-poll until `stop` and one more empty-handed poll; on connection errors
    (a killed reader) retry on the next base with the same token."""
    which = 0
    filt = quote('{"room":{"timeline":{"limit":1000}}}')
    quiet_after_stop = 0
    while quiet_after_stop < 2:
        base = bases[which % len(bases)]
        try:
            status, body = await client.call(
                "GET",
                f"/_matrix/client/v3/sync?since={since}&timeout=1000&filter={filt}",
                base=base,
            )
        except (TimeoutError, aiohttp.ClientError):
            which += 1
            await asyncio.sleep(0.2)
            continue
        assert status != 500, body  # a fault is a 502/503 to retry, never a crash
        if status >= 500:
            which += 1
            await asyncio.sleep(0.2)
            continue
        assert status == 200, body
        timeline = body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
        assert not timeline.get("limited"), "a gap: events skipped"
        got = [e["event_id"] for e in timeline.get("events", []) if e["type"] == "m.room.message"]
        seen.extend(got)
        since = body["next_batch"]
        if stop.is_set():
            quiet_after_stop = quiet_after_stop + 1 if not got else 0


async def _run_load(
    deployment: Deployment,
    session: aiohttp.ClientSession,
    fault: Any,
) -> None:
    readers = [port_url(deployment, n) for n in ("client_reader1", "client_reader2")]
    owner = await register(session, deployment.url)
    room = (await owner.ok("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}))[
        "room_id"
    ]
    senders = [await register(session, deployment.url) for _ in range(SENDERS)]
    watchers = [await register(session, deployment.url) for _ in range(4)]
    for c in [*senders, *watchers]:
        await c.ok("POST", f"/_matrix/client/v3/join/{room}", {})
    tokens = []
    for w in watchers:
        tokens.append((await w.ok("GET", "/_matrix/client/v3/sync?timeout=0"))["next_batch"])
    stop = asyncio.Event()
    seen: list[list[str]] = [[] for _ in watchers]
    # Two watchers on reader 1 (moving to reader 2 when it dies), one on reader 2, one
    # through nginx.
    bases = [readers, readers, readers[::-1], [deployment.url]]
    collectors = [
        asyncio.create_task(_sync_collector(w, room, t, s, stop, b))
        for w, t, s, b in zip(watchers, tokens, seen, bases, strict=True)
    ]
    acknowledged: list[str] = []

    async def send(i: int, client: Client) -> None:
        # Half the senders go through nginx to the main, half through a reader (forwarded).
        base = deployment.url if i % 2 == 0 else readers[i % 2]
        for n in range(MESSAGES_PER_SENDER):
            # Retried for a minute: a PostgreSQL restart on a loaded machine (CI's two
            # cores) can keep every process answering 503 for several seconds.
            deadline = time.monotonic() + 60
            status, body = 0, None
            while time.monotonic() < deadline:
                try:
                    status, body = await client.call(
                        "PUT",
                        f"/_matrix/client/v3/rooms/{room}/send/m.room.message/s{i}-{n}",
                        {"msgtype": "m.text", "body": f"{i}-{n}"},
                        base=base,
                    )
                except (TimeoutError, aiohttp.ClientError):
                    status, body = 0, None
                if status == 200:
                    acknowledged.append(body["event_id"])
                    break
                # A fault answers 502/503 (or drops the connection), never a crash.
                assert status != 500, body
                base = deployment.url  # a killed reader: the client retries elsewhere
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"a send never succeeded: {status} {body}")

    sending = [asyncio.create_task(send(i, c)) for i, c in enumerate(senders)]
    await asyncio.sleep(0.5)
    await fault()
    await asyncio.gather(*sending)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*collectors), 60)
    assert len(set(acknowledged)) == SENDERS * MESSAGES_PER_SENDER
    for got in seen:
        assert len(got) == len(set(got)), "an event was delivered twice"
        assert set(got) == set(acknowledged), (len(got), len(acknowledged))
    # Every message notified every watcher once: the push actions of events committed
    # just before the fault were recorded too (push/actions.py: retried after a
    # database failure, caught up at a killed writer's restart).
    for watcher in watchers:
        await _expect_unread(watcher, room, len(acknowledged), [deployment.url, *readers])


async def _expect_unread(client: Client, room: str, expected: int, bases: list[str]) -> None:
    """/sync on each base shows `expected` unread notifications in `room`, within a few
    seconds (a retry after a database fault waits a second or more)."""
    filt = quote(json.dumps({"room": {"rooms": [room], "timeline": {"limit": 1}}}))
    for base in bases:
        count = None
        for _ in range(100):
            status, body = await client.call(
                "GET", f"/_matrix/client/v3/sync?timeout=0&filter={filt}", base=base
            )
            if status == 200:
                unread = body["rooms"]["join"][room]["unread_notifications"]
                count = unread["notification_count"]
                if count == expected:
                    break
            await asyncio.sleep(0.1)
        assert count == expected, (client.user_id, base, count, expected)


async def test_every_event_reaches_every_client_once_across_a_killed_reader(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    async def kill_and_restart() -> None:
        deployment.kill("client_reader1")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(deployment.start_process, "client_reader1")

    await _run_load(deployment, session, kill_and_restart)
    assert "Traceback" not in deployment.logs("main")


async def test_every_event_reaches_every_client_once_across_a_redis_restart(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    async def restart_redis() -> None:
        await asyncio.to_thread(deployment.stop_redis)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(deployment.start_redis)

    await _run_load(deployment, session, restart_redis)


async def test_every_event_reaches_every_client_once_across_a_killed_main(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    reader = port_url(deployment, "client_reader2")
    probe = await register(session, deployment.url)

    async def kill_and_restart() -> None:
        deployment.kill("main")
        try:
            # Meanwhile: a write only the main makes, forwarded by a reader, fails
            # cleanly; reads still work.
            path = f"/_matrix/client/v3/user/{quote(probe.user_id)}/openid/request_token"
            status, body = await probe.call("POST", path, {}, base=reader)
            assert status == 502 and body["errcode"] == "M_UNKNOWN", (status, body)
            whoami = await probe.ok("GET", "/_matrix/client/v3/account/whoami", base=reader)
            assert whoami["user_id"] == probe.user_id
        finally:
            await asyncio.to_thread(deployment.start_process, "main")

    await _run_load(deployment, session, kill_and_restart)


async def _until_every_process_serves(d: Deployment, probe: Client, attempts: int) -> None:
    """After a database fault: each process (through nginx, and each reader) answers a
    Matrix 5xx until it serves again by itself, within `attempts` tenths of a second."""
    readers = [port_url(d, n) for n in ("client_reader1", "client_reader2")]
    for base in [d.url, *readers]:
        for _ in range(attempts):
            status, body = await probe.call("GET", "/_matrix/client/v3/joined_rooms", base=base)
            if status == 200:
                break
            assert status in (502, 503) and body["errcode"] == "M_UNKNOWN", (status, body)
            await asyncio.sleep(0.1)
        assert status == 200, f"{base} did not get its database connections back"


async def test_dropped_database_connections_fail_cleanly_and_recover(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """What a PostgreSQL restart does to the processes: every connection cut at once.
    Requests meanwhile fail with a Matrix 5xx (never a hang or a crash), the pools
    reconnect by themselves, and no acknowledged event is lost or seen twice."""
    probe = await register(session, deployment.url)

    async def cut() -> None:
        assert await asyncio.to_thread(deployment.drop_database_connections) > 0
        await _until_every_process_serves(deployment, probe, attempts=40)

    await _run_load(deployment, session, cut)


async def test_a_postgresql_restart_fails_cleanly_and_recovers(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """The real thing: the PostgreSQL cluster restarts under load (`pg_ctlcluster`,
    named by .ci/run in HS_TEST_POSTGRES_CLUSTER). Meanwhile requests answer a Matrix
    5xx; afterwards every process serves again by itself, and every acknowledged event
    reaches every client exactly once."""
    cluster = os.environ.get("HS_TEST_POSTGRES_CLUSTER", "").split()
    if len(cluster) != 2:
        pytest.skip("HS_TEST_POSTGRES_CLUSTER (version and cluster name) not set")
    probe = await register(session, deployment.url)

    async def restart() -> None:
        done = await asyncio.to_thread(
            subprocess.run,
            ["pg_ctlcluster", *cluster, "restart"],
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        await _until_every_process_serves(deployment, probe, attempts=100)

    await _run_load(deployment, session, restart)


async def test_the_media_worker_serves_media_without_the_main(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """nginx sends every media request to the media worker, which serves it itself
    (uploads too): media keeps working while the main is down. An asynchronous upload
    (create, then PUT) wakes a download that was already waiting."""
    client = await register(session, deployment.url)
    headers = {"Authorization": f"Bearer {client.token}", "Content-Type": "text/plain"}
    deployment.kill("main")
    try:
        async with session.post(
            deployment.url + "/_matrix/media/v3/upload?filename=a.txt",
            data=b"served by the media worker",
            headers=headers,
        ) as r:
            assert r.status == 200, await r.text()
            mxc = (await r.json())["content_uri"]
        server_name, media_id = mxc.removeprefix("mxc://").split("/")
        download = f"/_matrix/client/v1/media/download/{server_name}/{media_id}"
        async with session.get(deployment.url + download, headers=headers) as r:
            assert (r.status, await r.read()) == (200, b"served by the media worker")

        created = await client.ok("POST", "/_matrix/media/v1/create")
        later_id = created["content_uri"].rsplit("/", 1)[1]

        async def wait_for_it() -> bytes:
            path = f"/_matrix/client/v1/media/download/{server_name}/{later_id}"
            async with session.get(
                deployment.url + path + "?timeout_ms=20000", headers=headers
            ) as r:
                assert r.status == 200, await r.text()
                return await r.read()

        waiting = asyncio.ensure_future(wait_for_it())
        await asyncio.sleep(0.3)
        async with session.put(
            deployment.url + f"/_matrix/media/v3/upload/{server_name}/{later_id}",
            data=b"late bytes",
            headers=headers,
        ) as r:
            assert r.status == 200, await r.text()
        assert await asyncio.wait_for(waiting, 15) == b"late bytes"
    finally:
        await asyncio.to_thread(deployment.start_process, "main")
    assert "/_matrix/media/v3/upload" in deployment.logs("media_repository1")


async def test_the_media_worker_serves_the_media_admin_api_without_the_main(
    deployment: Deployment, session: aiohttp.ClientSession
) -> None:
    """The admin API's media endpoints read and delete the media store's files: nginx
    sends them to the media worker, which serves them (the main need not reach the
    store, and they work while it is down); the rest of the admin API is the main's."""
    url = f"{deployment.url}/_synapse/admin/v1/register"
    async with session.get(url) as resp:
        nonce = (await resp.json())["nonce"]
    name = f"root{secrets.token_hex(3)}"
    mac = registration_mac(SECRET, nonce, name, "pw", True)
    body = {"nonce": nonce, "username": name, "password": "pw", "admin": True, "mac": mac}
    admin = Client(session, deployment.url, (await admin_registered(session, url, body)))
    user = await register(session, deployment.url)
    headers = {"Authorization": f"Bearer {user.token}", "Content-Type": "text/plain"}
    admin_api = "/_synapse/admin/v1"
    deployment.kill("main")
    try:
        ids = []
        for data in (b"first", b"second"):
            async with session.post(
                deployment.url + "/_matrix/media/v3/upload", data=data, headers=headers
            ) as r:
                assert r.status == 200, await r.text()
                ids.append((await r.json())["content_uri"].removeprefix("mxc://"))
        (server_name, first), (_, second) = (ref.split("/") for ref in ids)
        info = await admin.ok("GET", f"{admin_api}/media/{server_name}/{first}")
        assert info["media_info"]["user_id"] == user.user_id
        assert info["media_info"]["media_length"] == len(b"first")
        status, refused = await user.call("GET", f"{admin_api}/media/{server_name}/{first}")
        assert (status, refused["errcode"]) == (403, "M_FORBIDDEN")
        listed = await admin.ok("GET", f"{admin_api}/users/{quote(user.user_id)}/media")
        assert sorted(m["media_id"] for m in listed["media"]) == sorted([first, second])
        await admin.ok("POST", f"{admin_api}/media/quarantine/{server_name}/{first}")
        deleted = await admin.ok("DELETE", f"{admin_api}/media/{server_name}/{second}")
        assert deleted == {"deleted_media": [second], "total": 1}
        for media_id in (first, second):
            path = f"/_matrix/client/v1/media/download/{server_name}/{media_id}"
            async with session.get(deployment.url + path, headers=headers) as r:
                assert r.status == 404, media_id
        # The rest of the admin API is the main's: down, so nginx's 502.
        status, down = await admin.call("GET", f"/_synapse/admin/v2/users/{user.user_id}")
        assert (status, down["errcode"]) == (502, "M_UNKNOWN")
    finally:
        await asyncio.to_thread(deployment.start_process, "main")
    assert f"{admin_api}/media/quarantine/" in deployment.logs("media_repository1")


async def admin_registered(session: aiohttp.ClientSession, url: str, body: Any) -> str:
    async with session.post(url, json=body) as resp:
        data = await resp.json()
        assert resp.status == 200, data
    return str(data["access_token"])


async def _raw(port: int, request: bytes) -> tuple[int, str, Any]:
    """One request written as is (no client library cleans it up): status line,
    Content-Type and the JSON body of nginx's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head, _, body = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")
    finally:
        writer.close()
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), json.loads(body)


async def test_what_nginx_refuses_itself_is_a_matrix_error(deployment: Deployment) -> None:
    """A NUL in the path, a body over client_max_body_size, a path over nginx's buffers:
    nginx answers before any process sees the request; clients still get JSON with an
    errcode, not nginx's HTML page (found by the hostile-route test against the
    deployment)."""
    port = deployment.nginx_port
    host = b"Host: localhost\r\nConnection: close\r\n"
    cases = [
        (b"GET /_matrix/client/v3/rooms/%00/state HTTP/1.1\r\n" + host + b"\r\n", 400),
        (
            b"PUT /_matrix/federation/v1/send/%00 HTTP/1.1\r\n"
            + host
            + b"Content-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
            400,
        ),
        (
            b"POST /_matrix/media/v3/upload HTTP/1.1\r\n"
            + host
            + b"Content-Length: 999999999\r\n\r\n",
            413,
        ),
        (b"GET /_matrix/client/v3/" + b"a" * 20_000 + b" HTTP/1.1\r\n" + host + b"\r\n", 414),
    ]
    expected = {400: "M_UNRECOGNIZED", 413: "M_TOO_LARGE", 414: "M_TOO_LARGE"}
    for request, status in cases:
        got, content_type, body = await _raw(port, request)
        assert (got, content_type) == (status, "application/json"), request[:60]
        assert body["errcode"] == expected[status] and body["error"], body
