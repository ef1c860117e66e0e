"""Command line: `python -m homeserver [run] -c config.yaml`, `generate-config`, `register-user`.

Exit codes: 0 clean shutdown (SIGTERM/SIGINT) or success, 1 a startup/runtime problem
(unusable key file or database, port in use, registration refused), 2 a configuration
or usage problem. Expected failures print one clear message, never a traceback, and
never overwrite the file they complain about.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import hashlib
import hmac
import json
import logging
import signal
import sqlite3
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from homeserver import __version__
from homeserver.config import (
    Config,
    ConfigError,
    ensure_secrets,
    load_config,
    read_stored_shared_secret,
)

logger = logging.getLogger("homeserver")

COMMANDS = ("run", "generate-config", "register-user", "port-db", "nginx-config")
SHUTDOWN_TIMEOUT_S = 5.0


class StartupError(Exception):
    """A problem that stops the server from starting; the message is shown as is."""


# --------------------------------------------------------------------------- run


def _tls_context(config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(config.tls.certificate_path), str(config.tls.private_key_path))
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load TLS certificate {config.tls.certificate_path} / key "
            f"{config.tls.private_key_path}: {exc}"
        ) from None
    return context


def _describe_bind_error(host: str, port: int, exc: OSError) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        why = "the address is already in use (is another server running?)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "this machine has no such address"
    else:
        why = exc.strerror or str(exc)
    return f"cannot listen on {host}:{port}: {why}"


async def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    from homeserver.app import create_app
    from homeserver.appstate import LISTENERS
    from homeserver.listener_guard import (
        GuardedAppRunner,
        QuietLoopErrors,
        default_max_connections,
        raise_fd_limit,
    )

    app = create_app(config)
    max_connections = default_max_connections(raise_fd_limit())
    # access_log=None: our request log (homeserver.request_log) replaces aiohttp's.
    runner = GuardedAppRunner(
        app,
        max_connections=max_connections,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        access_log=None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietLoopErrors())
    logger.info("Serving at most %d client connections at once", max_connections)

    def on_signal(signum: int) -> None:
        logger.info("Received %s, shutting down", signal.Signals(signum).name)
        stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal acts as usual
            loop.remove_signal_handler(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await runner.setup()  # the composition lifetime: keys, database, services
        listeners = app[LISTENERS]
        for listener in config.listeners:
            ssl_context = _tls_context(config) if listener.tls else None
            for host in listener.bind_addresses:
                before = set(map(repr, runner.addresses))
                if listener.port:
                    listeners[listener.port] = listener
                site = web.TCPSite(runner, host, listener.port, ssl_context=ssl_context)
                try:
                    await site.start()
                except OSError as exc:
                    raise StartupError(_describe_bind_error(host, listener.port, exc)) from None
                for address in runner.addresses:
                    if repr(address) not in before and isinstance(address, tuple):
                        listeners[address[1]] = listener
                        scheme = "https" if listener.tls else "http"
                        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
                        logger.info(
                            "Listening on %s://%s:%d (%s)",
                            scheme,
                            shown,
                            address[1],
                            ", ".join(sorted(listener.resources)),
                        )
        logger.info("Homeserver %s for %s is ready", __version__, config.server_name)
        settle_gc(config)
        await stop.wait()
    finally:
        await runner.cleanup()
        logger.info("Stopped")


def settle_gc(config: Config) -> None:
    """Once started: everything built at start-up lives as long as the process, so it
    is kept out of the cyclic GC's full collections (which otherwise rescan it on every
    pass), and the collector runs at the configured thresholds (`gc_thresholds`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*config.gc_thresholds)


def _startup_error_types() -> tuple[type[BaseException], ...]:
    from federation.keys import SigningKeyError
    from homeserver.storage.errors import StorageError

    return (StartupError, SigningKeyError, StorageError, ConfigError)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(*args.config)
    except ConfigError as exc:
        _print_config_problems(exc)
        return 2
    from homeserver.logging_setup import LogConfigError, setup_logging

    try:
        setup_logging(config.log_level, config.log_config)
    except LogConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _warn_ignored(config)
    if not config.keys.trusted_key_servers and not config.keys.suppress_key_server_warning:
        logger.info("No trusted_key_servers: remote keys are fetched from their servers directly")
    expected = _startup_error_types()
    try:
        config = ensure_secrets(config)
        config.media.store_path.mkdir(parents=True, exist_ok=True)
        asyncio.run(serve(config))
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as exc:
        print(f"error: database {config.database.describe()} is unusable: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_nginx_config(args: argparse.Namespace) -> int:
    from homeserver.replication.nginx import render, upstreams_from_configs

    try:
        main = load_config(args.config)
        workers = [load_config(args.config, worker) for worker in args.worker]
        text = render(
            upstreams_from_configs(main, workers),
            listen=args.listen,
            prefix=args.prefix,
            tls_listen=args.tls_listen,
            tls_certificate=args.tls_certificate,
            tls_key=args.tls_key,
        )
        print(text, end="")
    except ConfigError as exc:
        _print_config_problems(exc)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_config_problems(exc: ConfigError) -> None:
    count = len(exc.problems)
    print(f"Configuration has {count} problem{'s' if count != 1 else ''}:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)


# --------------------------------------------------------------------------- generate-config


def cmd_generate_config(args: argparse.Namespace) -> int:
    from homeserver.config_template import generate_config

    try:
        text = generate_config(
            args.server_name,
            args.data_dir,
            open_registration=args.open_registration,
            port=args.port,
        )
    except ValueError as exc:
        print(f"error: invalid --server-name {args.server_name!r}: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        print(f"error: {args.output} exists; not overwriting it", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"Wrote {args.output}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- register-user


def registration_mac(
    secret: str, nonce: str, user: str, password: str, admin: bool, user_type: str | None = None
) -> str:
    """HMAC-SHA1 over nonce, user, password, admin flag (and user type), NUL separated.

    The scheme of Synapse's shared-secret registration API, so its tooling and ours are
    interchangeable.
    """
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    parts = [nonce, user, password, "admin" if admin else "notadmin"]
    if user_type:
        parts.append(user_type)
    mac.update(b"\x00".join(p.encode("utf-8") for p in parts))
    return mac.hexdigest()


def _client_url(config: Config) -> str:
    """A URL reaching the first listener that serves the client API."""
    for listener in config.listeners:
        if "client" in listener.resources:
            host = listener.bind_addresses[0]
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            if ":" in host:
                host = f"[{host}]"
            return f"{'https' if listener.tls else 'http'}://{host}:{listener.port}"
    return "http://localhost:8008"


def _http_json(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())
            reason = f"{error.get('errcode', exc.code)}: {error.get('error', '')}"
        except ValueError:
            reason = f"HTTP {exc.code} {exc.reason}"
        raise StartupError(f"{method} {url} failed: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        cause: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise StartupError(f"cannot reach {url}: {cause}") from None
    except ValueError:
        raise StartupError(f"{method} {url} did not return JSON") from None


def cmd_register_user(args: argparse.Namespace) -> int:
    secret = args.shared_secret
    url = args.server_url
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            _print_config_problems(exc)
            return 2
        secret = secret or read_stored_shared_secret(config)
        url = url or _client_url(config)
    if not secret:
        print(
            "error: no shared secret: pass -k SECRET, or -c CONFIG for a server that has "
            "registration_shared_secret set (or generated by its first start)",
            file=sys.stderr,
        )
        return 2
    url = (url or "http://localhost:8008").rstrip("/")
    user = args.user or _ask("New user localpart: ")
    password = args.password
    if password is None:
        if not sys.stdin.isatty():
            print("error: -p PASSWORD is required when not on a terminal", file=sys.stderr)
            return 2
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Confirm password: "):
            print("error: passwords do not match", file=sys.stderr)
            return 1
    if not user or not password:
        print("error: user and password must not be empty", file=sys.stderr)
        return 2
    endpoint = f"{url}/_synapse/admin/v1/register"
    try:
        nonce = _http_json("GET", endpoint).get("nonce")
        if not isinstance(nonce, str):
            raise StartupError(f"GET {endpoint} returned no nonce")
        body: dict[str, Any] = {
            "nonce": nonce,
            "username": user,
            "password": password,
            "admin": bool(args.admin),
            "mac": registration_mac(
                secret, nonce, user, password, bool(args.admin), args.user_type
            ),
        }
        if args.user_type:
            body["user_type"] = args.user_type
        result = _http_json("POST", endpoint, body)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Registered {result.get('user_id', user)}{' (admin)' if args.admin else ''}")
    return 0


def _ask(prompt: str) -> str:
    if not sys.stdin.isatty():
        return ""
    return input(prompt).strip()


# --------------------------------------------------------------------------- port-db


def cmd_port_db(args: argparse.Namespace) -> int:
    """Copy a stopped server's SQLite database into the PostgreSQL database the config
    names (see homeserver.storage.port)."""
    from homeserver.storage.errors import StorageError
    from homeserver.storage.port import PortError, port_sqlite_to_postgres

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _print_config_problems(exc)
        return 2
    if not config.database.is_postgres:
        print(
            f"error: {args.config} must name the PostgreSQL target"
            " (database: {name: psycopg2, args: {...}})",
            file=sys.stderr,
        )
        return 2
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(line, flush=True)

    try:
        report = asyncio.run(
            port_sqlite_to_postgres(
                Path(args.sqlite_database),
                config.database.args,
                batch_size=args.batch_size,
                progress=progress,
            )
        )
    except (PortError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, (high, _) in sorted(report.positions.items()):
        if high is not None:
            progress(f"  position {key}: {high}")
    progress(
        f"Done: {report.total_rows} rows in {len(report.rows)} tables copied to "
        f"{config.database.describe()}; row counts and stream positions match."
    )
    progress("Start the server with this config to run on PostgreSQL.")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m homeserver",
        description="A Matrix homeserver. Without a command, `run` is assumed.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the server")
    run.add_argument(
        "-c",
        "--config",
        required=True,
        type=Path,
        action="append",
        help="path to the YAML config; repeat for a worker (-c homeserver.yaml -c worker.yaml)",
    )
    run.set_defaults(func=cmd_run)

    nginx = commands.add_parser(
        "nginx-config", help="print the nginx config that routes to the main and its workers"
    )
    nginx.add_argument("-c", "--config", required=True, type=Path, help="the shared config")
    nginx.add_argument(
        "-w", "--worker", type=Path, action="append", default=[], help="a worker's own file"
    )
    nginx.add_argument("--listen", default="0.0.0.0:8008", help="nginx's address (0.0.0.0:8008)")
    nginx.add_argument("--prefix", help="a folder for nginx's pid, logs and temp files")
    nginx.add_argument("--tls-listen", help="also serve HTTPS here (e.g. 0.0.0.0:8448)")
    nginx.add_argument("--tls-certificate", help="certificate chain for --tls-listen")
    nginx.add_argument("--tls-key", help="private key for --tls-listen")
    nginx.set_defaults(func=cmd_nginx_config)

    gen = commands.add_parser("generate-config", help="print a complete commented config")
    gen.add_argument("--server-name", required=True, help="the domain in your user IDs")
    gen.add_argument(
        "--data-dir",
        default="data",
        help="where the database, keys and media go (relative to the config file)",
    )
    gen.add_argument("--port", type=int, default=8008, help="listener port (default 8008)")
    gen.add_argument(
        "--open-registration",
        action="store_true",
        help="allow anyone reaching the (loopback) listener to register without verification",
    )
    gen.add_argument("-o", "--output", help="write to this file (never overwrites) not stdout")
    gen.set_defaults(func=cmd_generate_config)

    reg = commands.add_parser(
        "register-user",
        help="create an account on a running server via the shared-secret admin API",
    )
    reg.add_argument("-u", "--user", help="localpart of the new user")
    reg.add_argument("-p", "--password", help="password (prompted for when omitted)")
    admin = reg.add_mutually_exclusive_group()
    admin.add_argument("-a", "--admin", action="store_true", help="make the user a server admin")
    admin.add_argument("--no-admin", dest="admin", action="store_false")
    reg.add_argument("-t", "--user-type", help="optional user type (e.g. bot)")
    secret = reg.add_mutually_exclusive_group()
    secret.add_argument("-k", "--shared-secret", help="registration_shared_secret")
    secret.add_argument("-c", "--config", type=Path, help="read the secret (and URL) from config")
    reg.add_argument(
        "server_url", nargs="?", help="server URL (default: from -c, else localhost:8008)"
    )
    reg.set_defaults(func=cmd_register_user)

    port = commands.add_parser(
        "port-db",
        help="copy a stopped server's SQLite database into an empty PostgreSQL database",
    )
    port.add_argument("--sqlite-database", required=True, help="the SQLite database file")
    port.add_argument(
        "-c",
        "--config",
        "--postgres-config",
        dest="config",
        required=True,
        type=Path,
        help="a config whose database section names the (empty) PostgreSQL target",
    )
    port.add_argument("--batch-size", type=int, default=5000, help="rows per COPY (5000)")
    port.set_defaults(func=cmd_port_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "run")  # `python -m homeserver -c config.yaml`
    args = build_parser().parse_args(argv)
    return args.func(args)


def _warn_ignored(config: Config) -> None:
    """Name each Synapse setting of the file that this server does not implement."""
    for key in config.ignored_keys:
        logger.warning("Ignoring Synapse setting %r: not implemented by this server", key)


if __name__ == "__main__":
    sys.exit(main())
