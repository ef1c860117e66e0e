"""matrix-js-sdk (a real client, from npm) on our simplified sliding sync (issue 14):
its room list arrives, a new message from another user shows in the room's timeline,
an invite appears, and a to-device message is delivered through the extension.

The SDK is installed by .ci/run into tests/js (npm); without Node or the package the
test skips, unless JS_CLIENTS=1 (set by .ci/run once the install worked)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from homeserver.app import create_app
from tests.client.helpers import auth, register_user

JS = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS / "sliding_sync_client.mjs"
REQUIRED = os.environ.get("JS_CLIENTS") == "1"


def _unavailable() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JS / "node_modules" / "matrix-js-sdk").is_dir():
        return "matrix-js-sdk is not installed in tests/js (npm install --prefix tests/js)"
    return None


@pytest.fixture
async def live(aiohttp_client: Any, tmp_config: Any) -> TestClient:
    reason = _unavailable()
    if reason:
        if REQUIRED:
            pytest.fail(f"JS_CLIENTS=1 but {reason}")
        pytest.skip(reason)
    server = TestServer(create_app(tmp_config()), host="127.0.0.1")
    return await aiohttp_client(server)


async def run_js(live: TestClient, script: str, user: dict[str, Any], *args: str) -> Any:
    """Run a one-shot script of tests/js as `user` against `live`: its last output line,
    parsed as JSON (a line starting with ERROR fails the test, with the output)."""
    base = str(live.make_url("")).rstrip("/")
    who = (user["user_id"], user["device_id"], user["access_token"])
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(JS / script),
        base,
        *who,
        *args,
        cwd=str(JS),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    lines = out.decode().strip().splitlines()
    assert lines and not lines[-1].startswith("ERROR"), out.decode()[-2000:]
    return json.loads(lines[-1])


class Js:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    async def expect(self, marker: str, timeout: float = 30) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode().strip()
                if not line:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise AssertionError(f"js client exited: {tail}")
                if line.startswith(marker) or line == "TIMEOUT":
                    assert line.startswith(marker), f"waiting for {marker}: {line}"
                    return line

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        await self.proc.stdin.drain()


async def test_matrix_js_sdk_room_list_messages_invites_to_device(
    live: TestClient, tmp_path: Path
) -> None:
    alice = await register_user(live, "alice")
    bob = await register_user(live, "bob")
    a, b = auth(alice["access_token"]), auth(bob["access_token"])
    resp = await live.post(
        "/_matrix/client/v3/createRoom", json={"preset": "public_chat"}, headers=a
    )
    room = (await resp.json())["room_id"]
    await live.post(f"/_matrix/client/v3/join/{room}", json={}, headers=b)

    base = f"http://127.0.0.1:{live.server.port}"
    log = tmp_path / "js-client.log"  # the SDK logs plenty: a file, not a pipe to fill
    stderr = log.open("wb")
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        base,
        alice["user_id"],
        alice["device_id"],
        alice["access_token"],
        cwd=JS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )
    js = Js(proc, log)
    try:
        await js.expect("READY")
        await js.send("rooms")
        assert room in await js.expect("ROOMS")

        await live.put(
            f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
            json={"msgtype": "m.text", "body": "hello from bob"},
            headers=b,
        )
        await js.send(f"wait_message {room} hello from bob")
        await js.expect("GOT_MESSAGE")

        resp = await live.post(
            "/_matrix/client/v3/createRoom",
            json={"preset": "private_chat", "invite": [alice["user_id"]]},
            headers=b,
        )
        invited = (await resp.json())["room_id"]
        await js.send(f"wait_invite {invited}")
        await js.expect("GOT_INVITE")

        await live.put(
            f"/_matrix/client/v3/sendToDevice/org.example.ping/{uuid.uuid4().hex}",
            json={"messages": {alice["user_id"]: {alice["device_id"]: {"n": 1}}}},
            headers=b,
        )
        await js.send("wait_to_device org.example.ping")
        await js.expect("GOT_TO_DEVICE")
        await js.send("quit")
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr.close()
