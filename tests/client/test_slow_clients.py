"""Slow clients, against the runner the server really uses, on a loopback port.

Clients that do not read their answers (homeserver.send_guard): a user whose /sync is
megabytes asks for it on sockets with a tiny receive buffer and reads nothing. Before
the guard, each such answer stayed in our memory, with its request's task, for as long
as the socket stayed open. Now a write paused too long is closed, and past the bound on
all unsent bytes the longest-paused connections are closed first, while a client that
reads gets its whole answer throughout.

Clients that stop sending their request body (homeserver.http.body_chunks): the
connection, the task and what had arrived were held for as long as the client liked;
now such a request gets 408 and its connection is closed, for JSON bodies and media
uploads alike, and nothing of it is stored."""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from homeserver.app import create_app
from homeserver.appstate import MEDIA, STORES
from homeserver.listener_guard import GuardedAppRunner
from homeserver.send_guard import StalledWrites

# Ten account-data events of 800 KB: a /sync answer of about 8 MB, more than the
# kernel's socket buffers on loopback take, so most of it waits in our transport.
ENTRIES = 10
ENTRY_BYTES = 800_000


def _server_tls(directory: Path) -> ssl.SSLContext:
    """A TLS context with a fresh self-signed certificate for localhost."""
    key, cert = directory / "tls.key", directory / "tls.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"]
        + ["-days", "1"],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _start(
    tmp_config, stalls: StalledWrites, tls: ssl.SSLContext | None = None
) -> tuple[GuardedAppRunner, str, str]:
    """The server, with one user whose /sync is ~8 MB: (runner, base URL, token)."""
    runner = GuardedAppRunner(
        create_app(tmp_config()), access_log=None, max_connections=100, stalls=stalls
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    accounts = runner.app[STORES].accounts
    user_id = "@heavy:test.local"
    await accounts.create_user(user_id, None)
    await accounts.upsert_device(user_id, "D1", "heavy's device")
    token = "syt_" + secrets.token_urlsafe(18)
    await accounts.add_access_token(token, user_id, "D1")
    async with aiohttp.ClientSession() as session:
        for i in range(ENTRIES):
            url = f"{base}/_matrix/client/v3/user/{user_id}/account_data/big.{i}"
            body = {"blob": f"{i}" * ENTRY_BYTES}
            headers = {"Authorization": f"Bearer {token}"}
            async with session.put(url, json=body, headers=headers, ssl=False) as resp:
                assert resp.status == 200, await resp.text()
    return runner, base, token


def _sync_request(token: str) -> bytes:
    return (
        f"GET /_matrix/client/v3/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


def _small_buffered_socket(base: str) -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock, int(base.rsplit(":", 1)[1])


async def _sync_without_reading(base: str, token: str) -> socket.socket:
    """Ask for the /sync on a socket with a 4 KB receive buffer; read nothing."""
    sock, port = _small_buffered_socket(base)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, _sync_request(token))
    return sock


async def _tls_sync_without_reading(
    base: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The same over TLS: the stream takes its 64 KB limit, then reads no more."""
    sock, port = _small_buffered_socket(base)
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(
        sock=sock, ssl=_client_tls(), server_hostname="localhost"
    )
    writer.write(_sync_request(token))
    return reader, writer


async def _until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


async def _drain(sock: socket.socket, seconds: float) -> tuple[int, bool]:
    """Read what the socket gives for up to `seconds`: (bytes, whether it ended)."""
    loop = asyncio.get_running_loop()
    received = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 1.0)
        except TimeoutError:
            continue
        except ConnectionError:
            return received, True
        if not chunk:
            return received, True
        received += len(chunk)
    return received, False


async def _full_sync(base: str, token: str) -> dict:
    async with aiohttp.ClientSession() as session:
        url = f"{base}/_matrix/client/v3/sync"
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(url, headers=headers, ssl=False) as resp:
            assert resp.status == 200
            return await resp.json()


def _blobs(body: dict) -> dict[str, int]:
    return {
        event["type"]: len(event["content"]["blob"])
        for event in body["account_data"]["events"]
        if event["type"].startswith("big.")
    }


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_client_that_reads_nothing_is_closed_after_the_send_timeout(
    tmp_config, tmp_path, tls: bool
) -> None:
    stalls = StalledWrites(timeout_s=1.5)
    runner, base, token = await _start(tmp_config, stalls, _server_tls(tmp_path) if tls else None)
    try:
        if tls:
            reader, writer = await _tls_sync_without_reading(base, token)
        else:
            sock = await _sync_without_reading(base, token)
        # The answer is written and most of it waits, unsent, in our transport.
        assert await _until(lambda: stalls.paused_connections == 1, 10.0)
        assert stalls.total_bytes > 2_000_000
        assert len(runner.server.connections) == 1
        # A client that reads gets the whole answer meanwhile.
        assert _blobs(await _full_sync(base, token)) == {
            f"big.{i}": ENTRY_BYTES for i in range(ENTRIES)
        }
        # The one that reads nothing is closed once its write has been paused 1.5 s,
        # and its request's task ends with it (the connection leaves the server).
        assert await _until(lambda: stalls.closed_for_timeout == 1, 10.0)
        assert await _until(lambda: len(runner.server.connections) == 0, 5.0)
        assert stalls.paused_connections == 0 and stalls.total_bytes == 0
        if tls:
            try:
                rest = await asyncio.wait_for(reader.read(), 10.0)
            except (ConnectionError, ssl.SSLError):
                rest = b""
            assert len(rest) < ENTRIES * ENTRY_BYTES
            writer.close()
        else:
            received, ended = await _drain(sock, 5.0)
            assert ended and received < ENTRIES * ENTRY_BYTES
            sock.close()
    finally:
        await runner.cleanup()


async def test_past_the_total_bound_the_longest_paused_are_closed_first(tmp_config) -> None:
    # Room for one stalled answer, not two; no timeout within the test's time.
    stalls = StalledWrites(timeout_s=120.0, max_bytes=7_000_000, grace_s=3.0)
    runner, base, token = await _start(tmp_config, stalls)
    try:
        first = await _sync_without_reading(base, token)
        assert await _until(lambda: stalls.paused_connections == 1, 10.0)
        await asyncio.sleep(3.5)
        second = await _sync_without_reading(base, token)
        # The second pause takes the total past the bound: the first (paused past the
        # grace) is closed at once, the second is left alone.
        assert await _until(lambda: stalls.closed_for_total == 1, 10.0)
        assert stalls.paused_connections == 1
        assert 2_000_000 < stalls.total_bytes <= stalls.max_bytes
        received, ended = await _drain(first, 5.0)
        assert ended and received < ENTRIES * ENTRY_BYTES
        # Straight away a third that does not read, then one that does: the third
        # takes the total past the bound again, but the second (the older) is closed
        # only once its grace has passed; the reader gets its whole answer meanwhile.
        third = await _sync_without_reading(base, token)
        assert await _until(lambda: stalls.paused_connections == 2, 10.0)
        assert stalls.closed_for_total == 1
        assert _blobs(await _full_sync(base, token)) == {
            f"big.{i}": ENTRY_BYTES for i in range(ENTRIES)
        }
        assert await _until(lambda: stalls.closed_for_total == 2, 5.0)
        assert stalls.paused_connections == 1
        received, ended = await _drain(second, 5.0)
        assert ended
        # The third, paused last, stays until it reads or the timeout comes.
        received, ended = await _drain(third, 0.5)
        assert not ended
        for sock in (first, second, third):
            sock.close()
    finally:
        await runner.cleanup()


async def _stalled_body(base: str, token: str, method_path: str, length: int) -> bytes:
    """Send headers announcing `length` bytes of body, then 10 bytes and nothing more;
    everything the server sends back until it closes the connection."""
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"{method_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
            '{"blob": "'
        ).encode()
    )
    try:
        return await asyncio.wait_for(reader.read(), 30.0)
    finally:
        writer.close()


async def test_a_body_that_stops_arriving_is_refused_and_not_stored(
    tmp_config, monkeypatch
) -> None:
    monkeypatch.setattr("homeserver.http.BODY_STALL_TIMEOUT_S", 1.0)
    runner, base, token = await _start(tmp_config, StalledWrites())
    try:
        started = time.monotonic()
        answers = await asyncio.gather(
            _stalled_body(
                base,
                token,
                "PUT /_matrix/client/v3/user/@heavy:test.local/account_data/half.sent",
                100_000,
            ),
            _stalled_body(base, token, "POST /_matrix/media/v3/upload?filename=a.txt", 100_000),
        )
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b'"errcode":"M_UNKNOWN"' in body.replace(b" ", b"")
        # Refused after the 1 s stall; the connection closed by the server (at the
        # latest when aiohttp's 10 s of lingering for the rest of the body end).
        assert time.monotonic() - started < 25.0
        assert await _until(lambda: len(runner.server.connections) == 0, 15.0)
        # Nothing of either request was stored; the server answers as before.
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{base}/_matrix/client/v3/user/@heavy:test.local/account_data/half.sent"
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 404
                assert (await resp.json())["errcode"] == "M_NOT_FOUND"
        media = runner.app[MEDIA]
        assert await media.store.local_media_ids_of_user("@heavy:test.local") == []
        stored = [p for p in media.config.store_path.rglob("*") if p.is_file()]
        assert stored == []
    finally:
        await runner.cleanup()
