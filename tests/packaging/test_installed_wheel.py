"""What users install is the wheel: build it, install it, run it as an operator would.

`pip install .` once produced a server that could not create its database outside the
source tree (the migrations were not in the wheel), and every other test imported the
source tree, so nothing noticed. This test builds the wheel from the tree, checks that
it holds every runtime file of the packages, installs it with its dependencies into a
fresh virtual environment, and runs the installed `homeserver` console script from an
empty folder (not the source tree, not the config's folder) on a generated config:
register, create a room, send a message, read it back, stop with SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("homeserver", "federation")


def _run(cmd: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install .` builds, from a copy of the tree: a build/ folder left
    in the checkout by an earlier build would otherwise hide files the build drops."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", *PACKAGES):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)], cwd=out)
    (found,) = out.glob("homeserver-*.whl")
    return found


def test_wheel_holds_every_runtime_file_of_the_tree(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tree = {
        str(path.relative_to(REPO))
        for package in PACKAGES
        for path in (REPO / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    missing = sorted(tree - names)
    assert not missing, f"files of the tree missing from the wheel: {missing}"
    assert any(n.startswith("homeserver/storage/migrations/0001_") for n in names)


def _call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    request = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401 and path.endswith("/register"):
            return json.loads(exc.read())
        raise AssertionError(f"{method} {path}: {exc.code} {exc.read()!r}") from None


def test_installed_wheel_runs_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # A scrubbed environment: nothing may reach the source tree (with it on PYTHONPATH,
    # pip even takes a stale homeserver.egg-info there for an installed copy).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    _run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    where = _run(
        [str(python), "-c", "import homeserver, federation; print(homeserver.__file__)"],
        cwd=tmp_path,
        env=env,
    )
    assert str(env_dir) in where and str(REPO) not in where, where

    etc, workdir = tmp_path / "etc", tmp_path / "empty"
    etc.mkdir()
    workdir.mkdir()
    port = free_port()
    script = env_dir / "bin" / "homeserver"
    _run(
        [str(script), "generate-config", "--server-name", "wheel.test", "--port", str(port),
         "--open-registration", "-o", str(etc / "homeserver.yaml")],
        cwd=workdir,
        env=env,
    )  # fmt: skip
    proc = subprocess.Popen(
        [str(script), "-c", str(etc / "homeserver.yaml")],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/_matrix/client/v3"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {proc.communicate()[1]}")
            try:
                _call(f"http://127.0.0.1:{port}", "GET", "/_matrix/client/versions")
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        body = {"username": "alice", "password": "wheel-test-password"}
        first = _call(base, "POST", "/register", body)
        body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
        token = _call(base, "POST", "/register", body)["access_token"]
        room_id = _call(base, "POST", "/createRoom", {"name": "from the wheel"}, token)["room_id"]
        sent = _call(
            base,
            "PUT",
            f"/rooms/{room_id}/send/m.room.message/t1",
            {"msgtype": "m.text", "body": "hello from an installed server"},
            token,
        )
        page = _call(base, "GET", f"/rooms/{room_id}/messages?dir=b&limit=5", token=token)
        newest = page["chunk"][0]
        assert newest["event_id"] == sent["event_id"]
        assert newest["content"]["body"] == "hello from an installed server"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    # Data went next to the config (relative paths resolve there), not into the cwd.
    assert (etc / "data" / "homeserver.db").is_file()
    assert list(workdir.iterdir()) == []
