"""A worker deployment started by a test, as an operator runs one (README "Workers").

PostgreSQL (a fresh schema in the database HS_TEST_POSTGRES_DSN names), a Redis server
of its own, the main process, workers started with `-c homeserver.yaml -c <worker>.yaml`,
and nginx in front with the config `python -m homeserver nginx-config` renders. Every
process binds 127.0.0.1 on a free port and is ended by `stop()` (by its PID).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 40

# Every deployment not stopped yet: stopped when the test process exits however it ends
# (an interrupted run, a fixture that never closed), so no nginx or Redis outlives it.
_RUNNING: weakref.WeakSet[Deployment] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for deployment in list(_RUNNING):
        with contextlib.suppress(Exception):
            deployment.stop()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # pytest then tears its fixtures down, and atexit runs


# A test run ended with SIGTERM (a CI timeout, `kill`) stops its deployments too.
if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
):
    signal.signal(signal.SIGTERM, _interrupt)


# The README's single-machine example, what the suites run against: the main, two
# client readers, a federation inbound worker, a federation sender and two event
# persisters (seven processes), with Redis and nginx.
FULL_LAYOUT: dict[str, int] = {
    "client_readers": 2,
    "federation_inbound": 1,
    "federation_senders": 1,
    "event_persisters": 2,
}


def _process_env() -> dict[str, str]:
    """The environment of the deployment's processes: this one's, with the repository
    on the path and without pytest's note of the current test (whose ID, with a
    parameter of raw bytes, can pass the kernel's limit on an environment)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    return {**env, "PYTHONPATH": str(REPO)}


def missing_parts() -> str | None:
    """Why a worker deployment cannot run here (None when it can)."""
    if not os.environ.get("HS_TEST_POSTGRES_DSN"):
        return "HS_TEST_POSTGRES_DSN is not set (no PostgreSQL)"
    for binary in ("redis-server", "nginx"):
        if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists():
            return f"{binary} is not installed"
    return None


def require_parts() -> None:
    """Skip a test that needs a deployment when its parts are missing here; in CI
    (which installs them) fail instead, saying which."""
    why = missing_parts()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the worker deployment must run in CI: {why}")
        pytest.skip(why)


@contextlib.contextmanager
def running(workdir: Path, **kwargs: Any) -> Iterator[Deployment]:
    """A started Deployment(workdir, **kwargs), stopped on the way out: the body of a
    test module's deployment fixture."""
    require_parts()
    deployment = Deployment(workdir, **kwargs).start()
    try:
        yield deployment
    finally:
        deployment.stop()


def _run_async(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even under a running loop."""
    result: dict[str, Any] = {}

    def target() -> None:
        result["value"] = asyncio.run(coro)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return result.get("value")


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@dataclass
class Process:
    name: str
    args: list[str]
    port: int  # the port answering /versions (the health check)
    log: Path
    proc: subprocess.Popen[bytes] | None = None


class Deployment:
    """main + `client_readers` client readers + `federation_inbound` federation
    inbound workers (+ federation senders, media workers, pushers, an appservice
    sender, event persisters), behind nginx; `url` is nginx's."""

    def __init__(
        self,
        workdir: Path,
        *,
        client_readers: int = 2,
        federation_inbound: int = 1,
        federation_senders: int = 0,
        media_workers: int = 0,
        pushers: int = 0,
        appservice_sender: bool = False,
        event_persisters: int = 0,
        server_name: str = "localhost",
        overrides: dict[str, Any] | None = None,
        public_port: int | None = None,
        tls_port: int | None = None,
        tls_files: tuple[str, str] | None = None,
        workers: bool = True,
    ) -> None:
        """`workers=False`: the main alone on the same PostgreSQL, no Redis, no nginx
        (the single-process baseline of bench/workersbench.py)."""
        self.with_workers = workers
        self.workdir = workdir
        self.server_name = server_name
        self.dsn = os.environ["HS_TEST_POSTGRES_DSN"]
        self.schema = f"workers_{secrets.token_hex(4)}"
        self.secret = secrets.token_hex(16)
        self.redis_port = free_port()
        self.nginx_port = public_port or free_port()
        self.tls_port, self.tls_files = tls_port, tls_files
        self.url = f"http://127.0.0.1:{self.nginx_port}"
        self.processes: dict[str, Process] = {}
        self._redis: subprocess.Popen[bytes] | None = None
        self._nginx: subprocess.Popen[bytes] | None = None
        self._client_readers = client_readers
        self._federation_inbound = federation_inbound
        self._federation_senders = federation_senders
        self._media_workers = media_workers
        self._pushers = pushers
        self._appservice_senders = 1 if appservice_sender else 0
        self._persisters = {
            f"event_persister{i}": free_port() for i in range(1, event_persisters + 1)
        }
        # Each client reader's replication listener (in instance_map): where the
        # federation inbound workers hand a stream writer other servers' EDUs.
        self._reader_replication = {
            f"client_reader{i}": free_port() for i in range(1, client_readers + 1)
        }
        self._overrides = overrides or {}

    # -- configuration --------------------------------------------------------------

    def _write_configs(self) -> None:
        main_port, replication_port = free_port(), free_port()
        subprocess.run(
            [sys.executable, "-m", "homeserver", "generate-config", "--server-name",
             self.server_name, "--data-dir", "data", "--port", str(main_port),
             "--open-registration", "-o", str(self.workdir / "homeserver.yaml")],
            cwd=self.workdir, check=True, capture_output=True, timeout=60,
            env=_process_env(),
        )  # fmt: skip
        self._base_config = yaml.safe_load((self.workdir / "homeserver.yaml").read_text())
        self._base_config.update(
            {
                "rc_enabled": False,
                "room_list_publication_rules": [{"action": "allow"}],
                "password_hashing": {"opslimit": 1, "memlimit": 8192},
                "database": {
                    "name": "psycopg2",
                    "args": {"dsn": self.app_dsn, "schema": self.schema, "cp_min": 1, "cp_max": 8},
                },
                "redis": {"enabled": True, "host": "127.0.0.1", "port": self.redis_port},
                "instance_map": {
                    "main": {"host": "127.0.0.1", "port": replication_port},
                    **{name: {"host": "127.0.0.1", "port": port}
                       for name, port in {**self._persisters,
                                          **self._reader_replication}.items()},
                },
                "worker_replication_secret": self.secret,
                "federation_sender_instances": [
                    f"federation_sender{i}" for i in range(1, self._federation_senders + 1)
                ],
                "pusher_instances": [f"pusher{i}" for i in range(1, self._pushers + 1)],
                "listeners": [
                    {"port": main_port, "bind_addresses": ["127.0.0.1"], "x_forwarded": True,
                     "resources": [{"names": ["client", "federation"]}]},
                    {"port": replication_port, "bind_addresses": ["127.0.0.1"],
                     "resources": [{"names": ["replication"]}]},
                ],
            }
        )  # fmt: skip
        shared = self._write_shared_config()
        self.processes["main"] = Process(
            "main", ["-c", str(shared)], main_port, self.workdir / "main.log"
        )
        self._write_worker_configs(shared)

    def reconfigure(self, overrides: dict[str, Any]) -> None:
        """Replace the settings given at construction, for the next start() of a
        stopped deployment (a restart with other settings)."""
        assert not any(
            p.proc is not None and p.proc.poll() is None for p in self.processes.values()
        )
        self._overrides = overrides
        self._write_shared_config()

    def _write_shared_config(self) -> Path:
        """homeserver.yaml, which every process reads: the generated config, the
        deployment's settings, then the caller's overrides."""
        config = {**self._base_config, **self._overrides}
        if self._appservice_senders:
            config["notify_appservices_from_worker"] = "appservice1"
        if self._persisters:
            config["stream_writers"] = {
                **config.get("stream_writers", {}),
                "events": list(self._persisters),
            }
        if not self.with_workers:
            for key in ("redis", "instance_map", "worker_replication_secret"):
                config.pop(key)
            config.pop("federation_sender_instances")
            config.pop("pusher_instances")
            config.pop("notify_appservices_from_worker", None)
            config.pop("stream_writers", None)
            self._pushers = self._appservice_senders = 0
            self._persisters = {}
            config["listeners"] = config["listeners"][:1]
            self._client_readers = self._federation_inbound = self._federation_senders = 0
            self._media_workers = 0
        shared = self.workdir / "homeserver.yaml"
        shared.write_text(yaml.safe_dump(config))
        return shared

    def _write_worker_configs(self, shared: Path) -> None:
        roles = [("client_reader", "client", self._client_readers)]
        roles.append(("federation_inbound", "federation", self._federation_inbound))
        roles.append(("federation_sender", "federation", self._federation_senders))
        roles.append(("media_repository", "media", self._media_workers))
        # Background roles serve no public traffic; a client listener answers the
        # health check (nginx routes nothing to them).
        roles.append(("pusher", "client", self._pushers))
        roles.append(("appservice", "client", self._appservice_senders))
        roles.append(("event_persister", "replication", len(self._persisters)))
        for role, resource, count in roles:
            for i in range(1, count + 1):
                name = f"{role}{i}"
                port = self._persisters.get(name) or free_port()
                worker = {
                    "worker_app": "generic_worker",
                    "worker_name": name,
                    "worker_listeners": [
                        {"port": port, "bind_addresses": ["127.0.0.1"], "x_forwarded": True,
                         "resources": [{"names": [resource]}]},
                    ],
                }  # fmt: skip
                if name in self._reader_replication:
                    worker["worker_listeners"].append(
                        {"port": self._reader_replication[name], "bind_addresses": ["127.0.0.1"],
                         "resources": [{"names": ["replication"]}]}
                    )  # fmt: skip
                path = self.workdir / f"{name}.yaml"
                path.write_text(yaml.safe_dump(worker))
                self.processes[name] = Process(
                    name, ["-c", str(shared), "-c", str(path)], port, self.workdir / f"{name}.log"
                )

    def _nginx_config(self) -> str:
        """What `python -m homeserver nginx-config` prints for this deployment."""
        args = ["-c", str(self.workdir / "homeserver.yaml")]
        for name in self.processes:
            if name != "main":
                args += ["-w", str(self.workdir / f"{name}.yaml")]
        args += ["--listen", f"127.0.0.1:{self.nginx_port}"]
        args += ["--prefix", str(self.workdir / "nginx")]
        if self.tls_port and self.tls_files:
            args += ["--tls-listen", f"127.0.0.1:{self.tls_port}"]
            args += ["--tls-certificate", self.tls_files[0], "--tls-key", self.tls_files[1]]
        return subprocess.run(
            [sys.executable, "-m", "homeserver", "nginx-config", *args],
            cwd=self.workdir,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
            env=_process_env(),
        ).stdout

    @property
    def app_dsn(self) -> str:
        """The servers' DSN: named after the schema, so a test can cut exactly their
        connections (`drop_database_connections`)."""
        joiner = "&" if "?" in self.dsn else "?"
        return f"{self.dsn}{joiner}application_name={self.schema}"

    def drop_database_connections(self) -> int:
        """Terminate every PostgreSQL connection of this deployment's processes (what a
        PostgreSQL restart does to them); the number terminated."""

        async def terminate() -> int:
            import asyncpg

            conn = await asyncpg.connect(self.dsn)
            try:
                rows = await conn.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = $1",
                    self.schema,
                )
                return len(rows)
            finally:
                await conn.close()

        return int(_run_async(terminate()))

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Deployment:
        """Start everything; on any failure stop what did start, then raise."""
        _RUNNING.add(self)
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Deployment:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.processes:  # a restart (after stop(keep_data=True)) keeps its configs
            self._write_configs()
        if not self.with_workers:
            self.start_process("main")
            self.url = f"http://127.0.0.1:{self.processes['main'].port}"
            return self
        self.start_redis()
        self.start_process("main")  # first: it migrates the schema
        workers = [name for name in self.processes if name != "main"]
        for name in workers:  # started together, then waited for
            self.start_process(name, wait=False)
        for name in workers:
            self.wait_for_process(name)
        (self.workdir / "nginx").mkdir(exist_ok=True)
        conf = self.workdir / "nginx" / "nginx.conf"
        conf.write_text(self._nginx_config())
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self._nginx = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(self.workdir / "nginx"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "nginx.log").open("wb"),
        )
        self._wait(self.url, lambda: self._nginx, "nginx")
        return self

    def start_redis(self) -> None:
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        self._redis = subprocess.Popen(
            [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=(self.workdir / "redis.log").open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def stop_redis(self) -> None:
        if self._redis is not None:
            self._redis.terminate()
            self._redis.wait(timeout=10)
            self._redis = None

    def start_process(self, name: str, *, wait: bool = True) -> None:
        """(Re)start a stopped or killed process. One still running is left as it is: a
        test's `finally` restarting what it meant to kill, after failing before the kill,
        would otherwise start a second one and lose track of the first (which outlived
        the deployment's stop)."""
        p = self.processes[name]
        if p.proc is not None and p.proc.poll() is None:
            if wait:
                self.wait_for_process(name)
            return
        p.proc = subprocess.Popen(
            [sys.executable, "-m", "homeserver", "run", *p.args],
            cwd=self.workdir,
            stdout=p.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=_process_env(),
        )
        if wait:
            self.wait_for_process(name)

    def wait_for_process(self, name: str) -> None:
        p = self.processes[name]
        self._wait(f"http://127.0.0.1:{p.port}", lambda: p.proc, name, self._health(name))

    def instance_url(self, name: str) -> str:
        """The URL of a process's replication listener (instance_map)."""
        config = yaml.safe_load((self.workdir / "homeserver.yaml").read_text())
        where = config["instance_map"][name]
        return f"http://{where['host']}:{where['port']}"

    def kill(self, name: str) -> None:
        """SIGKILL one process (a crash)."""
        p = self.processes[name]
        if p.proc is not None and p.proc.poll() is None:
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait(timeout=10)

    def _health(self, name: str) -> str:
        """What a process answers once ready: federation-only workers serve the key
        document, everything else /versions."""
        if name.startswith("federation_"):
            return "/_matrix/key/v2/server"
        if name.startswith("media_"):
            return "/_matrix/media/v3/config"  # 401 without a token: answering
        return "/_matrix/client/versions"

    def _wait(self, url: str, proc: Any, what: str, path: str = "/_matrix/client/versions") -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            current = proc()
            if current is not None and current.poll() is not None:
                raise RuntimeError(f"{what} exited ({current.returncode}): {self.logs(what)}")
            try:
                with urllib.request.urlopen(url + path, timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                # The server answers (a route that needs a token; a replication
                # listener that needs the secret).
                if e.code in (401, 403):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start in time: {self.logs(what)}")
            time.sleep(0.1)

    def logs(self, name: str) -> str:
        path = self.processes[name].log if name in self.processes else self.workdir / "nginx.log"
        try:
            return path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop every process; `keep_data` keeps the database schema (and the configs)
        for a later start() of the same deployment: a whole-deployment restart."""
        _RUNNING.discard(self)
        if self._nginx is not None:
            self._nginx.terminate()
            self._nginx.wait(timeout=10)
            self._nginx = None
        for p in reversed(list(self.processes.values())):
            if p.proc is not None and p.proc.poll() is None:
                p.proc.terminate()
                try:
                    p.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.proc.kill()
                    p.proc.wait()
        self.stop_redis()
        if keep_data:
            _RUNNING.add(self)  # still owns a schema: the exit hook drops it
            return
        with contextlib.suppress(Exception):
            _run_async(_drop_schema(self.dsn, self.schema))
