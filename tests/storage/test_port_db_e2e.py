"""`python -m homeserver port-db` on the database of a real run, then the same server
on PostgreSQL, read back through the API.

Server A runs as a process on SQLite and is used through HTTP: accounts, a room with
messages and a name, E2EE device and one-time keys, a key backup, a push rule,
receipts, account data, a to-device message, and a federation outbox: a user of
server B (an in-process loopback server) joined A's room, then B went down while A
kept sending, so A's outbox holds undelivered events and a backoff for B. A stops;
port-db copies its database into an empty PostgreSQL schema; A starts again on
PostgreSQL, and everything reads back, new writes continue after the copied stream
positions, and once B is back the outbox written on SQLite is delivered from
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from signedjson.key import generate_signing_key

from homeserver.__main__ import registration_mac
from tests.client.test_e2ee_keys import device_keys
from tests.federation.multiserver import LoopbackServer, eventually
from tests.ports import free_port
from tests.storage.conftest import POSTGRES_SKIP_REASON, drop_postgres_schema, postgres_test_config
from tests.unit.test_cli import ENV

SECRET = "port-db-test-secret"


class ServerProcess:
    """Server A: `python -m homeserver` with a config in its own folder."""

    def __init__(self, base: Path, database: dict[str, Any]) -> None:
        self.port = free_port()
        self.name = f"127.0.0.1:{self.port}"
        self.dir = base
        self.config: dict[str, Any] = {
            "server_name": self.name,
            "listeners": [{"port": self.port, "resources": [{"names": ["client", "federation"]}]}],
            "database": database,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": SECRET,
            "password_hashing": {"opslimit": 1, "memlimit": 8192},
            "federation_client_plain_http_for_tests": True,
            "ip_range_whitelist": ["127.0.0.0/8"],
            "rc_enabled": False,
        }
        self.proc: subprocess.Popen[str] | None = None
        self.http = aiohttp.ClientSession()

    def write_config(self, name: str, database: dict[str, Any]) -> Path:
        path = self.dir / name
        path.write_text(yaml.safe_dump({**self.config, "database": database}))
        return path

    async def start(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "homeserver", "-c", str(config)],
            cwd=self.dir,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

        async def up() -> bool | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.communicate()[1][-3000:]}")
            try:
                status, _ = await self.call("GET", "/_matrix/client/versions")
                return status == 200 or None
            except aiohttp.ClientError:
                return None

        await eventually(up, timeout=60)

    async def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(self.proc.communicate, timeout=30)
        assert self.proc.returncode == 0, stderr[-3000:]
        self.proc = None
        return stderr

    async def call(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(
            method, f"http://{self.name}{path}", json=body, headers=headers
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        status, data = await self.call(method, path, token, body)
        assert status == 200, f"{method} {path}: {status} {data}"
        return data

    async def register(self, user: str, *, admin: bool = False) -> tuple[str, str]:
        nonce = (await self.ok("GET", "/_synapse/admin/v1/register"))["nonce"]
        body = {
            "nonce": nonce,
            "username": user,
            "password": f"pw-{user}",
            "admin": admin,
            "mac": registration_mac(SECRET, nonce, user, f"pw-{user}", admin),
        }
        data = await self.ok("POST", "/_synapse/admin/v1/register", body=body)
        return data["user_id"], data["access_token"]


@pytest.fixture
async def pg() -> AsyncIterator[dict[str, Any]]:
    config = postgres_test_config()
    if config is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    try:
        yield config
    finally:
        await drop_postgres_schema(config)


CS = "/_matrix/client/v3"


async def test_port_a_real_database_and_run_on_postgresql(
    tmp_path: Path, pg: dict[str, Any]
) -> None:
    sqlite_db = {"name": "sqlite3", "args": {"database": "homeserver.db"}}
    a = ServerProcess(tmp_path, sqlite_db)
    b = LoopbackServer(tmp_path, "b")
    await b.start()
    try:
        await a.start(a.write_config("sqlite.yaml", sqlite_db))
        alice, alice_token = await a.register("alice", admin=True)
        carol, carol_token = await a.register("carol")
        bob = await b.register("bob")

        room = (
            await a.ok(
                "POST", f"{CS}/createRoom", alice_token, {"preset": "public_chat", "name": "Ported"}
            )
        )["room_id"]
        await a.ok("POST", f"{CS}/join/{room}", carol_token, {})
        texts = [f"message {i}" for i in range(12)]
        event_ids = []
        for text in texts:
            data = await a.ok(
                "PUT",
                f"{CS}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
                alice_token,
                {"msgtype": "m.text", "body": text},
            )
            event_ids.append(data["event_id"])
        await a.ok("POST", f"{CS}/rooms/{room}/receipt/m.read/{event_ids[-1]}", carol_token, {})
        device = (await a.ok("GET", f"{CS}/account/whoami", alice_token))["device_id"]
        keys_body = device_keys(alice, device, generate_signing_key(device))
        otks = {
            f"signed_curve25519:AAAA{i}": {"key": f"otk{i}", "signatures": {}} for i in range(3)
        }
        await a.ok(
            "POST",
            f"{CS}/keys/upload",
            alice_token,
            {"device_keys": keys_body, "one_time_keys": otks},
        )
        backup = await a.ok(
            "POST",
            f"{CS}/room_keys/version",
            alice_token,
            {
                "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                "auth_data": {"public_key": "pk"},
            },
        )
        await a.ok(
            "PUT",
            f"{CS}/pushrules/global/content/ported",
            alice_token,
            {"pattern": "ported", "actions": ["notify"]},
        )
        await a.ok(
            "PUT", f"{CS}/user/{alice}/account_data/org.example.setting", alice_token, {"on": True}
        )
        await a.ok(
            "PUT",
            f"{CS}/sendToDevice/m.example/{uuid.uuid4().hex}",
            alice_token,
            {"messages": {carol: {"*": {"hello": "carol"}}}},
        )
        before = await a.ok("GET", f"{CS}/sync?timeout=0", alice_token)
        since = before["next_batch"]

        # Federation: bob (server B) joins, then B goes down while alice keeps talking.
        await b.join(bob, room, [a.name])
        await a.ok(
            "PUT",
            f"{CS}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
            alice_token,
            {"msgtype": "m.text", "body": "welcome bob"},
        )
        texts.append("welcome bob")
        assert await eventually(lambda: _texts(b, bob, room, "welcome bob"))
        await b.stop()
        queued = [f"queued {i}" for i in range(3)]
        for text in queued:
            await a.ok(
                "PUT",
                f"{CS}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
                alice_token,
                {"msgtype": "m.text", "body": text},
            )

        async def outbox_backing_off() -> dict | None:
            data = await a.ok(
                "GET", f"/_synapse/admin/v1/federation/destinations/{b.name}", alice_token
            )
            return data if data["failure_ts"] else None

        await eventually(outbox_backing_off, timeout=30)
        await a.stop()

        # -- port --------------------------------------------------------------------
        pg_config = a.write_config("postgres.yaml", pg)
        result = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "homeserver",
                "port-db",
                "--sqlite-database",
                "homeserver.db",
                "-c",
                "postgres.yaml",
                "--batch-size",
                "5",
            ],
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        for table in (
            "events",
            "e2e_one_time_keys",
            "push_rules",
            "receipts",
            "federation_outbox",
            "destination_retry",
            "to_device_messages",
            "room_key_backup_versions",
            "account_data",
            "state_groups",
        ):
            assert f"\n{table}: " in out, table
        assert "  events: 5/" in out  # progress inside a big table
        assert "position events.stream_ordering:" in out
        assert "row counts and stream positions match" in out
        again = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "homeserver",
                "port-db",
                "--sqlite-database",
                "homeserver.db",
                "-c",
                "postgres.yaml",
            ],
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 1 and "not empty" in again.stderr

        # -- the same server on PostgreSQL ---------------------------------------------
        await a.start(pg_config)
        sync = await a.ok("GET", f"{CS}/sync?timeout=0", alice_token)
        joined = sync["rooms"]["join"][room]
        assert any(
            e["type"] == "m.room.name" and e["content"]["name"] == "Ported"
            for e in joined["state"]["events"] + joined["timeline"]["events"]
        )
        settings = {e["type"]: e["content"] for e in sync["account_data"]["events"]}
        assert settings["org.example.setting"] == {"on": True}
        messages = await a.ok("GET", f"{CS}/rooms/{room}/messages?dir=b&limit=100", alice_token)
        bodies = [
            e["content"].get("body") for e in messages["chunk"] if e["type"] == "m.room.message"
        ]
        assert bodies[::-1] == texts + queued
        receipts = [e for e in joined["ephemeral"]["events"] if e["type"] == "m.receipt"]
        assert receipts and event_ids[-1] in receipts[0]["content"]

        keys = await a.ok("POST", f"{CS}/keys/query", carol_token, {"device_keys": {alice: []}})
        assert keys["device_keys"][alice][device]["keys"] == keys_body["keys"]
        claimed = await a.ok(
            "POST",
            f"{CS}/keys/claim",
            carol_token,
            {"one_time_keys": {alice: {device: "signed_curve25519"}}},
        )
        (otk,) = claimed["one_time_keys"][alice][device].values()
        assert otk["key"].startswith("otk")
        version = await a.ok("GET", f"{CS}/room_keys/version", alice_token)
        assert version["version"] == backup["version"]
        rule = await a.ok("GET", f"{CS}/pushrules/global/content/ported", alice_token)
        assert rule["pattern"] == "ported"
        carol_sync = await a.ok("GET", f"{CS}/sync?timeout=0", carol_token)
        to_device = carol_sync["to_device"]["events"]
        assert [e["content"] for e in to_device] == [{"hello": "carol"}]

        # New writes continue after the copied positions: an incremental sync from a
        # token handed out on SQLite sees exactly the new message.
        new = await a.ok(
            "PUT",
            f"{CS}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
            alice_token,
            {"msgtype": "m.text", "body": "first on postgres"},
        )
        later = await a.ok("GET", f"{CS}/sync?timeout=0&since={since}", alice_token)
        new_texts = [
            e["content"].get("body")
            for e in later["rooms"]["join"][room]["timeline"]["events"]
            if e["type"] == "m.room.message"
        ]
        assert new_texts[-1] == "first on postgres" and "message 0" not in new_texts
        assert new["event_id"] not in event_ids
        status, _ = await a.call(
            "POST",
            f"{CS}/login",
            body={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "carol"},
                "password": "pw-carol",
            },
        )
        assert status == 200  # a new access token (identity sequence moved past old IDs)

        # B comes back: the outbox written on SQLite is delivered from PostgreSQL.
        await b.start()
        await a.ok(
            "POST",
            f"/_synapse/admin/v1/federation/destinations/{b.name}/reset_connection",
            alice_token,
            {},
        )
        assert await eventually(lambda: _texts(b, bob, room, "first on postgres"), timeout=30)
        delivered = await b.sync_texts(bob, room)
        assert all(text in delivered for text in queued), delivered
        await a.stop()
    finally:
        if a.proc is not None:
            a.proc.kill()
            a.proc.communicate()
        await a.http.close()
        await b.close()


async def _texts(server: LoopbackServer, user: str, room: str, text: str) -> bool | None:
    return True if text in await server.sync_texts(user, room) else None
