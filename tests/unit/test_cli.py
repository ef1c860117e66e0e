"""The command line, run as a user would: subprocesses in a temp dir, real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from homeserver.__main__ import main, registration_mac
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # test this tree, not an installed copy


def cli(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homeserver", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def server_dir(tmp_path: Path) -> tuple[Path, int]:
    """A temp dir holding a generated config (data in ./data) for a free port."""
    port = free_port()
    result = cli(
        "generate-config", "--server-name", "cli.test", "--port", str(port), "-o", "hs.yaml",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return tmp_path, port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_until_serving(proc: subprocess.Popen[str], url: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.communicate()[1]}")
        try:
            return get_json(url)
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start in time")


def test_run_serves_and_stops_cleanly_on_sigterm(server_dir: tuple[Path, int]) -> None:
    workdir, port = server_dir
    proc = subprocess.Popen(
        [sys.executable, "-m", "homeserver", "-c", "hs.yaml"],
        cwd=workdir,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = wait_until_serving(proc, f"http://127.0.0.1:{port}/_matrix/client/versions")
        assert "v1.12" in body["versions"]
        keys = get_json(f"http://127.0.0.1:{port}/_matrix/key/v2/server")
        assert keys["server_name"] == "cli.test"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert f"Listening on http://127.0.0.1:{port}" in stderr
    assert "Traceback" not in stderr
    data = workdir / "data"
    assert {p.name for p in data.iterdir()} >= {
        "homeserver.db",
        "homeserver.secrets.yaml",
        "cli.test.signing.key",
        "media_store",
    }


def test_corrupt_database_exits_1_and_is_untouched(server_dir: tuple[Path, int]) -> None:
    workdir, _ = server_dir
    db = workdir / "data" / "homeserver.db"
    db.parent.mkdir()
    garbage = b"this is not a database\x00" * 100
    db.write_bytes(garbage)
    result = cli("-c", "hs.yaml", cwd=workdir)
    assert result.returncode == 1
    assert "error:" in result.stderr and "homeserver.db" in result.stderr
    assert "Traceback" not in result.stderr
    assert db.read_bytes() == garbage
    assert not (workdir / "data" / "homeserver.db-wal").exists()


def test_bad_key_file_exits_1_and_is_untouched(server_dir: tuple[Path, int]) -> None:
    workdir, _ = server_dir
    key = workdir / "data" / "cli.test.signing.key"
    key.parent.mkdir()
    key.write_bytes(b"ed25519 a_bad not-a-seed\n")
    result = cli("-c", "hs.yaml", cwd=workdir)
    assert result.returncode == 1
    assert "error: signing key file" in result.stderr and "corrupt" in result.stderr
    assert "Traceback" not in result.stderr
    assert key.read_bytes() == b"ed25519 a_bad not-a-seed\n"
    assert not (workdir / "data" / "homeserver.db").exists()  # stopped before the database


def test_port_in_use_exits_1(server_dir: tuple[Path, int]) -> None:
    workdir, port = server_dir
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        result = cli("-c", "hs.yaml", cwd=workdir)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_problems_exit_2_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("listeners: []\nenable_registraton: true\n")
    result = cli("run", "-c", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "Configuration has 3 problems:" in result.stderr
    assert "server_name: required" in result.stderr
    assert "listeners: expected a non-empty list" in result.stderr
    assert "did you mean 'enable_registration'?" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.yaml"]  # nothing created


def test_generate_config_stdout_and_no_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate-config", "--server-name", "gen.test", "--data-dir", "/srv/hs"]) == 0
    out = capsys.readouterr().out
    assert 'server_name: "gen.test"' in out and '"/srv/hs/homeserver.db"' in out
    target = tmp_path / "existing.yaml"
    target.write_text("keep me")
    assert main(["generate-config", "--server-name", "gen.test", "-o", str(target)]) == 1
    assert target.read_text() == "keep me"
    assert main(["generate-config", "--server-name", "bad name"]) == 2


def test_registration_mac_matches_the_synapse_scheme() -> None:
    expected = hmac.new(b"shared", b"abc\x00alice\x00pw\x00admin\x00bot", hashlib.sha1).hexdigest()
    assert registration_mac("shared", "abc", "alice", "pw", True, "bot") == expected
    assert (
        registration_mac("shared", "abc", "alice", "pw", False)
        == hmac.new(b"shared", b"abc\x00alice\x00pw\x00notadmin", hashlib.sha1).hexdigest()
    )


async def test_register_user_speaks_the_shared_secret_api(aiohttp_server: Any) -> None:
    """A fake server checks the nonce and MAC exactly as the real endpoint must."""
    received: list[dict[str, Any]] = []

    async def get_nonce(request: web.Request) -> web.Response:
        return web.json_response({"nonce": "n0nce"})

    async def register(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(body)
        want = hmac.new(b"s3cret", digestmod=hashlib.sha1)
        want.update(b"n0nce\x00alice\x00hunter2\x00admin")
        if body["nonce"] != "n0nce" or body["mac"] != want.hexdigest():
            return web.json_response(
                {"errcode": "M_FORBIDDEN", "error": "HMAC incorrect"}, status=403
            )
        return web.json_response({"user_id": "@alice:fake.test", "access_token": "t"})

    app = web.Application()
    app.router.add_get("/_synapse/admin/v1/register", get_nonce)
    app.router.add_post("/_synapse/admin/v1/register", register)
    server = await aiohttp_server(app)
    url = f"http://127.0.0.1:{server.port}"

    ok = await asyncio.to_thread(
        main, ["register-user", "-u", "alice", "-p", "hunter2", "-a", "-k", "s3cret", url]
    )
    assert ok == 0
    assert received[-1]["username"] == "alice" and received[-1]["admin"] is True
    wrong = await asyncio.to_thread(
        main, ["register-user", "-u", "alice", "-p", "hunter2", "-a", "-k", "wrong", url]
    )
    assert wrong == 1


def test_register_user_needs_a_secret(tmp_path: Path) -> None:
    result = cli("register-user", "-u", "a", "-p", "b", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2 and "no shared secret" in result.stderr
