"""Background roles on workers (issue 16): pushers sharded by user and the appservice
sender, in a real deployment (tests/deployment.py: PostgreSQL, Redis, the main, a client
reader, two pushers, an appservice sender worker, nginx; and the same with two event
persisters).

What must hold, seen from a push gateway and an appservice (a recording HTTP server
started by the test):
- every notification is sent exactly once, by the pusher owning the user (sha256 mod
  2): while one pusher is SIGKILLed its users get nothing (the main sends none) and the
  other pusher's users get theirs; restarted, it catches up on what it missed, once;
- the appservice gets every event of its rooms exactly once from the worker, its
  MSC3202 device-list news too (heard by the main or the reader storing the keys,
  carried over Redis); while the worker is down nothing is sent, and restarted it
  sends what was missed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from homeserver.config.workers import shard
from tests.client.test_workers import Client, register
from tests.deployment import Deployment, require_parts

C = "/_matrix/client/v3"
HS_TOKEN = "hs-" + "h" * 30


class Recorder:
    """A push gateway and an appservice in one threaded HTTP server: it records every
    request body by path and answers as each would."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with recorder.lock:
                    recorder.requests.append((self.path, body))
                answer = b'{"rejected": []}' if "/push/" in self.path else b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_PUT = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pushes(self) -> list[tuple[str, str]]:
        """(pushkey, event_id) of every notification (badge-only ones left out)."""
        with self.lock:
            found = []
            for path, body in self.requests:
                n = body.get("notification", {}) if "/push/" in path else {}
                if n.get("event_id"):
                    found += [(d["pushkey"], n["event_id"]) for d in n["devices"]]
            return found

    def badges(self) -> dict[str, int]:
        """event_id -> the badge (`counts.unread`) its notification carried."""
        with self.lock:
            return {
                n["event_id"]: n.get("counts", {}).get("unread", 0)
                for path, body in self.requests
                if "/push/" in path and (n := body.get("notification", {})).get("event_id")
            }

    def transactions(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for path, body in self.requests if "/transactions/" in path]

    def appservice_events(self) -> list[str]:
        return [e["event_id"] for body in self.transactions() for e in body["events"]]


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    try:
        yield r
    finally:
        r.server.shutdown()


@pytest.fixture(scope="module", params=[0, 2], ids=["main_writes", "event_persisters"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, recorder: Recorder
) -> Iterator[Deployment]:
    """Without and with event persisters (then the events, their push actions and the
    appservice's share come from three writing processes, and the client reader writes
    device lists: key uploads, with their MSC3202 news)."""
    require_parts()
    workdir = Path(tmp_path_factory.mktemp("background"))
    registration = workdir / "bridge.yaml"
    registration.write_text(
        yaml.safe_dump(
            {
                "id": "bridge",
                "url": recorder.url + "/as",
                "as_token": "as-" + "a" * 30,
                "hs_token": HS_TOKEN,
                "sender_localpart": "bridgebot",
                "namespaces": {
                    "users": [{"exclusive": False, "regex": "@bridge_.*:localhost"}],
                    "aliases": [],
                    "rooms": [],
                },
                "rate_limited": False,
                "org.matrix.msc3202": True,
            }
        )
    )
    d = Deployment(
        workdir,
        client_readers=1,
        federation_inbound=0,
        pushers=2,
        appservice_sender=True,
        event_persisters=request.param,
        overrides={
            "ip_range_whitelist": ["127.0.0.0/8"],
            "app_service_config_files": [str(registration)],
            **({"stream_writers": {"device_lists": ["client_reader1"]}} if request.param else {}),
        },
    ).start()
    try:
        yield d
    finally:
        d.stop()


async def until(check: Any, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def send(alice: Client, room: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        body = {"msgtype": "m.text", "body": "hello"}
        txn = secrets.token_hex(6)
        data = await alice.ok("PUT", f"{C}/rooms/{room}/send/m.room.message/{txn}", body)
        ids.append(data["event_id"])
    return ids


async def test_each_pusher_sends_its_users_notifications_once_and_catches_up(
    deployment: Deployment, recorder: Recorder, session: aiohttp.ClientSession
) -> None:
    alice = await register(session, deployment.url)
    room = (await alice.ok("POST", f"{C}/createRoom", {"preset": "public_chat"}))["room_id"]
    # Recipients until each of the two pushers owns one.
    owned: dict[int, Client] = {}
    while len(owned) < 2:
        user = await register(session, deployment.url)
        owned.setdefault(shard(user.user_id, 2), user)
    for user in owned.values():
        await user.ok("POST", f"{C}/join/{room}", {})
        pusher = {
            "kind": "http",
            "app_id": "test.app",
            "pushkey": user.user_id,
            "app_display_name": "Test",
            "device_display_name": "phone",
            "lang": "en",
            "data": {"url": recorder.url + "/_matrix/push/v1/notify"},
        }
        await user.ok("POST", f"{C}/pushers/set", pusher)

    def got(user: Client, events: list[str]) -> bool:
        mine = {e for key, e in recorder.pushes() if key == user.user_id}
        return set(events) <= mine

    first = await send(alice, room, 5)
    await until(lambda: all(got(u, first) for u in owned.values()))

    # pusher1 down: its user gets nothing (no other process sends for them), the other
    # pusher's user gets every message.
    deployment.kill("pusher1")
    down, up = owned[0], owned[1]
    missed = await send(alice, room, 3)
    await until(lambda: got(up, missed))
    await asyncio.sleep(1.0)
    assert not {e for key, e in recorder.pushes() if key == down.user_id} & set(missed)

    # Restarted, it catches up on what was recorded meanwhile.
    deployment.start_process("pusher1")
    await until(lambda: got(down, missed))
    after = await send(alice, room, 2)
    await until(lambda: all(got(u, after) for u in owned.values()))
    await asyncio.sleep(0.5)
    pushes = [p for p in recorder.pushes() if p[0] in {u.user_id for u in owned.values()}]
    assert len(pushes) == len(set(pushes)) == 2 * (5 + 3 + 2), pushes


async def test_the_appservice_worker_sends_every_event_once_and_catches_up(
    deployment: Deployment, recorder: Recorder, session: aiohttp.ClientSession
) -> None:
    alice = await register(session, deployment.url)
    bridged = Client(session, deployment.url)
    data = await bridged.ok(
        "POST",
        f"{C}/register",
        {
            "username": f"bridge_{secrets.token_hex(4)}",
            "password": "pw",
            "auth": {"type": "m.login.dummy"},
        },
    )
    bridged.token, bridged.user_id = data["access_token"], data["user_id"]
    room = (await alice.ok("POST", f"{C}/createRoom", {"preset": "public_chat"}))["room_id"]
    await bridged.ok("POST", f"{C}/join/{room}", {})
    first = await send(alice, room, 5)
    await until(lambda: set(first) <= set(recorder.appservice_events()))

    # Device-list news is heard by the process storing the upload (the main, or the
    # client reader writing device lists) and sent by the worker: MSC3202's
    # device_lists.changed names alice.
    keys = {
        "user_id": alice.user_id,
        "device_id": alice.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {f"curve25519:{alice.device_id}": "abc"},
        "signatures": {},
    }
    await alice.ok("POST", f"{C}/keys/upload", {"device_keys": keys})

    def device_news() -> bool:
        field = "org.matrix.msc3202.device_lists"
        return any(
            alice.user_id in b.get(field, {}).get("changed", []) for b in recorder.transactions()
        )

    await until(device_news)

    await asyncio.sleep(0.5)  # the worker stored its position after the last answer
    deployment.kill("appservice1")
    before = len(recorder.transactions())
    missed = await send(alice, room, 3)
    await asyncio.sleep(1.0)
    assert len(recorder.transactions()) == before  # nobody else sends to the appservice
    deployment.start_process("appservice1")
    await until(lambda: set(missed) <= set(recorder.appservice_events()))
    sent = [e for e in recorder.appservice_events() if e in set(first + missed)]
    assert sorted(sent) == sorted(first + missed)
