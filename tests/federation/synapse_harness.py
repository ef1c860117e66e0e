"""Run real Synapse (via ../shared/interop/fedpair.sh) next to our server for interop tests.

The shared harness puts two Synapses on loopback: hs1 = 127.0.0.1:8481, hs2 =
127.0.0.1:8482, federating over TLS with a throw-away CA in $FED_DIR/certs. To put our
server in one seat we start only the other Synapse, then run `python -m homeserver` as
a subprocess with that seat's server name, TLS certificate and ports, and drive both with
`fedcheck.py` (client API only). Everything here is plumbing; the assertions live in
test_synapse_interop.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

#: fedpair.sh's fixed seats: federation (TLS) port == server-name port, client port.
SEATS: dict[str, tuple[int, int]] = {"hs1": (8481, 8491), "hs2": (8482, 8492)}


def interop_dir() -> Path | None:
    """The shared interop folder: $FED_INTEROP_DIR, ../shared/interop beside the clone."""
    candidates = [
        os.environ.get("FED_INTEROP_DIR"),
        str(REPO_ROOT.parent / "shared" / "interop"),
        "/work/shared/interop",
    ]
    for c in candidates:
        if c and (Path(c) / "fedpair.sh").is_file() and (Path(c) / "fedcheck.py").is_file():
            return Path(c)
    return None


def fed_dir() -> Path:
    """fedpair.sh's state folder (venv, certs, Synapse data), as fedpair.sh computes it."""
    default = Path(os.environ.get("TMPDIR") or "/tmp") / "fedpair"
    return Path(os.environ.get("FED_DIR") or default)


def synapse_python() -> Path:
    return Path(os.environ.get("SYNAPSE_PYTHON") or fed_dir() / "venv" / "bin" / "python")


def unavailable_reason() -> str | None:
    """None when Synapse interop can run here, else why not (the skip reason)."""
    idir = interop_dir()
    if idir is None:
        return "shared/interop (fedpair.sh, fedcheck.py) not found beside the repository"
    py = synapse_python()
    if not py.exists():
        return f"no Synapse venv at {py} (run {idir}/fedpair.sh install, set FED_DIR)"
    return None


def ports_taken() -> list[int]:
    """The fixed fedpair ports something already listens on."""
    ports = [p for p, _ in SEATS.values()] + [c for _, c in SEATS.values()]
    return [p for p in ports if port_in_use(p)]


def seats_lock(timeout: float) -> int | None:
    """An exclusive lock on $FED_DIR for the whole interop module (two pytest runs on one
    machine would fight over the fixed ports): the fd to keep, or None on timeout."""
    fed_dir().mkdir(parents=True, exist_ok=True)
    fd = os.open(fed_dir() / ".interop.lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.5)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def fedpair(*args: str, timeout: float = 180) -> str:
    """Run fedpair.sh with our FED_DIR; raise with its output when it fails."""
    idir = interop_dir()
    assert idir is not None
    env = {**os.environ, "FED_DIR": str(fed_dir()), "SYNAPSE_PYTHON": str(synapse_python())}
    proc = subprocess.run(
        ["bash", str(idir / "fedpair.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fedpair.sh {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _get(url: str, timeout: float = 2.0, context: Any = None) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status
    except Exception:
        return 0


@dataclass
class OurServer:
    """Our homeserver as a subprocess in one fedpair seat ("hs1" or "hs2")."""

    seat: str
    base: Path
    proc: subprocess.Popen | None = None

    @property
    def fed_port(self) -> int:
        return SEATS[self.seat][0]

    @property
    def client_port(self) -> int:
        return SEATS[self.seat][1]

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.fed_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def write_config(self) -> Path:
        certs = fed_dir() / "certs"
        self.base.mkdir(parents=True, exist_ok=True)
        config = {
            "server_name": self.server_name,
            "listeners": [
                {
                    "port": self.client_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "resources": [{"names": ["client"]}],
                },
                {
                    "port": self.fed_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "resources": [{"names": ["federation"]}],
                },
            ],
            "tls_certificate_path": str(certs / f"{self.seat}.crt"),
            "tls_private_key_path": str(certs / f"{self.seat}.key"),
            "federation_verify_certificates": True,
            "federation_custom_ca_list": [str(certs / "ca.crt")],
            "ip_range_whitelist": ["127.0.0.0/8"],
            "database": {"name": "sqlite3", "args": {"database": "homeserver.db"}},
            "signing_key_path": "signing.key",
            "media_store_path": "media_store",
            "rc_enabled": False,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "allow_public_rooms_over_federation": True,
            "password_hashing": {"opslimit": 1, "memlimit": 8192},
            "log_level": os.environ.get("INTEROP_LOG_LEVEL", "INFO"),
        }
        path = self.base / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, timeout: float = 30) -> None:
        cfg = self.write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "homeserver", "-c", str(cfg)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        url = f"{self.client_url}/_matrix/client/versions"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"our server exited early:\n{self.log_tail()}")
            if _get(url) == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"our server did not come up in {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class OurDeployment:
    """Our server as a worker deployment in one fedpair seat (issue 16): nginx serves
    the seat's client port and, with the seat's certificate, its federation port; behind
    it the main, two client readers, a federation inbound worker and two federation
    senders on PostgreSQL and Redis (tests/deployment.py)."""

    def __init__(self, seat: str, base: Path) -> None:
        from tests.deployment import FULL_LAYOUT, Deployment

        self.seat = seat
        certs = fed_dir() / "certs"
        fed_port, client_port = SEATS[seat]
        self.client_url = f"http://127.0.0.1:{client_port}"
        self.deployment = Deployment(
            base,
            **FULL_LAYOUT,
            media_workers=1,  # remote media is fetched by the media worker
            server_name=f"127.0.0.1:{fed_port}",
            public_port=client_port,
            tls_port=fed_port,
            tls_files=(str(certs / f"{seat}.crt"), str(certs / f"{seat}.key")),
            overrides={
                "federation_verify_certificates": True,
                "federation_custom_ca_list": [str(certs / "ca.crt")],
                "ip_range_whitelist": ["127.0.0.0/8"],
                "allow_public_rooms_over_federation": True,
                "enable_registration": True,
                "enable_registration_without_verification": True,
            },
        )

    def start(self) -> None:
        self.deployment.start()

    def stop(self) -> None:
        self.deployment.stop()

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(
            f"--- {name} ---\n{self.deployment.logs(name)}" for name in self.deployment.processes
        )


@dataclass
class FedcheckResult:
    returncode: int
    output: str
    results: dict[str, Any]


def run_fedcheck(
    hs1_url: str,
    hs2_url: str,
    room_version: str | None,
    json_out: Path,
    messages: int = 50,
    timeout: float = 300,
) -> FedcheckResult:
    """Run fedcheck.py (with Synapse's python, which has aiohttp+signedjson) and collect."""
    idir = interop_dir()
    assert idir is not None
    cmd = [
        str(synapse_python()),
        str(idir / "fedcheck.py"),
        "--hs1-url",
        hs1_url,
        "--hs1-name",
        "127.0.0.1:8481",
        "--hs2-url",
        hs2_url,
        "--hs2-name",
        "127.0.0.1:8482",
        "--ca",
        str(fed_dir() / "certs" / "ca.crt"),
        "--messages",
        str(messages),
        "--json-out",
        str(json_out),
    ]
    if room_version:
        cmd += ["--room-version", room_version]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        results = json.loads(json_out.read_text())
    except (OSError, ValueError):
        results = {}
    return FedcheckResult(proc.returncode, proc.stdout + proc.stderr, results)


def run_extras(hs1_url: str, hs2_url: str, json_out: Path, timeout: float = 300) -> FedcheckResult:
    """Run synapse_extras.py (typing, receipts, keys, to-device, redactions, ...)."""
    script = Path(__file__).with_name("synapse_extras.py")
    cmd = [str(synapse_python()), str(script), hs1_url, hs2_url, str(json_out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        results = json.loads(json_out.read_text())
    except (OSError, ValueError):
        results = {}
    return FedcheckResult(proc.returncode, proc.stdout + proc.stderr, results)
