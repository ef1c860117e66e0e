"""Config loading: every problem reported at once, defaults, paths, secrets."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
import yaml

from homeserver.config import (
    KNOWN_KEYS,
    ConfigError,
    RateLimit,
    ensure_secrets,
    load_config,
    parse_config,
    parse_duration_ms,
    parse_size,
    read_stored_shared_secret,
)
from homeserver.config_template import generate_config

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_minimal_config_gets_safe_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "hs.yaml", "server_name: example.com\n"))
    assert config.server_name == "example.com"
    assert len(config.listeners) == 1
    listener = config.listeners[0]
    assert (listener.port, listener.bind_addresses, listener.tls) == (8008, ("127.0.0.1",), False)
    assert listener.resources == {"client", "federation"}
    assert config.database.name == "sqlite3"
    assert config.database.path == tmp_path / "homeserver.db"
    assert config.database.args == {"database": str(tmp_path / "homeserver.db")}
    assert config.keys.signing_key_path == tmp_path / "example.com.signing.key"
    assert config.keys.key_refresh_interval_ms == 86_400_000
    assert config.keys.trusted_key_servers == ()  # unlike Synapse: no matrix.org default
    assert config.registration.enabled is False
    assert config.registration.shared_secret is None
    assert config.federation.verify_certificates is True
    assert config.federation.domain_whitelist is None
    assert config.default_room_version == "12"
    assert config.media.max_upload_size == 50 * 1024 * 1024
    assert config.ratelimit.enabled is True
    assert config.ratelimit.message == RateLimit(0.2, 10)
    assert config.ratelimit.admin_redaction.unlimited
    assert config.log_level == "INFO"
    assert config.config_path == (tmp_path / "hs.yaml").resolve()
    assert config.secrets_path == tmp_path / "homeserver.secrets.yaml"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.yaml",
        """
enable_registraton: true
listeners:
  - port: "eighty"
    bind_address: ["127.0.0.1"]
    resources: [{names: [client, federaton]}]
federation_verify_certificates: "yes please"
max_upload_size: "lots"
default_room_version: "99"
rc_message: {per_second: -1, burst_count: 10}
""",
    )
    problems = problems_of(path)
    text = "\n".join(problems)
    assert all(p.startswith(f"{path}: ") for p in problems), problems
    expected = [
        "server_name: required",
        "enable_registraton: unknown setting (did you mean 'enable_registration'?)",
        "listeners[0].port: expected an integer, got a string ('eighty')",
        "listeners[0].bind_address: unknown key (did you mean 'bind_addresses'?)",
        "listeners[0].resources[0].names[1]: unknown resource 'federaton'",
        "federation_verify_certificates: expected true or false, got a string",
        "max_upload_size: expected a size like '50M' or bytes",
        "default_room_version: unknown room version '99'",
        "rc_message.per_second: expected a positive number",
    ]
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert len(problems) == len(expected)


def test_invalid_server_name_and_types(tmp_path: Path) -> None:
    problems = problems_of(
        write(
            tmp_path / "c.yaml",
            "server_name: 'bad name!'\nlisteners: {port: 8008}\nenable_registration: 1\n",
        )
    )
    text = "\n".join(problems)
    assert "server_name: invalid server name 'bad name!'" in text
    assert "listeners: expected a non-empty list, got a mapping" in text
    assert "enable_registration: expected true or false, got an integer (1)" in text


def test_file_level_errors(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "missing.yaml") == [f"{tmp_path / 'missing.yaml'}: no such file"]
    bad_yaml = write(tmp_path / "broken.yaml", "server_name: a\nlisteners: [\n")
    (problem,) = problems_of(bad_yaml)
    assert problem.startswith(f"{bad_yaml}: line ") and "not valid YAML" in problem
    (problem,) = problems_of(write(tmp_path / "list.yaml", "- a\n- b\n"))
    assert "must be a YAML mapping" in problem


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "etc" / "hs"
    path = write(
        config_dir / "homeserver.yaml",
        """
server_name: example.com
database: {name: sqlite3, args: {database: ../../var/hs.db}}
signing_key_path: keys/example.key
media_store_path: /abs/media
""",
    )
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    config = load_config(Path("etc/hs/homeserver.yaml"))
    assert config.database.path == tmp_path / "var" / "hs.db"
    assert config.keys.signing_key_path == config_dir / "keys" / "example.key"
    assert config.media.store_path == Path("/abs/media")
    assert config.config_path == path


def test_listener_ports_must_be_distinct(tmp_path: Path) -> None:
    listener = {"port": 8008, "resources": [{"names": ["client"]}]}
    with pytest.raises(ConfigError) as info:
        parse_config({"server_name": "a.b", "listeners": [listener, listener]}, base_dir=tmp_path)
    assert info.value.problems == [
        "<config>: listeners[1].port: port 8008 is also used by listeners[0]; use one listener "
        "with several bind_addresses and resources"
    ]


def test_postgres_database_section(tmp_path: Path) -> None:
    config = parse_config(
        {
            "server_name": "a.b",
            "database": {
                "name": "psycopg2",
                "args": {
                    "user": "synapse_user",
                    "password": "secretpassword",
                    "database": "synapse",
                    "host": "localhost",
                    "port": 5433,
                    "cp_min": 5,
                    "cp_max": 10,
                },
            },
        },
        base_dir=tmp_path,
    )
    assert config.database.name == "psycopg2"
    assert dict(config.database.args) == {
        "user": "synapse_user",
        "password": "secretpassword",
        "database": "synapse",
        "host": "localhost",
        "port": 5433,
        "cp_min": 5,
        "cp_max": 10,
    }
    assert config.database.describe() == "PostgreSQL synapse_user@localhost:5433/synapse"
    # Generated secrets still have a home beside the (unused) default database path.
    assert config.secrets_path == tmp_path / "homeserver.secrets.yaml"
    alias = parse_config(
        {"server_name": "a.b", "database": {"name": "postgres", "args": {"dbname": "m"}}},
        base_dir=tmp_path,
    )
    assert alias.database.name == "psycopg2"
    assert dict(alias.database.args) == {"database": "m", "cp_min": 1, "cp_max": 10}


def test_postgres_args_are_checked(tmp_path: Path) -> None:
    problems = problems_of(
        write(
            tmp_path / "c.yaml",
            "server_name: a.b\ndatabase: {name: psycopg2, args: {user: x, prot: 1, port: 0}}\n",
        )
    )
    text = "\n".join(problems)
    assert "database.args.prot: unknown key" in text
    assert "database.args.port: expected an integer from 1 to 65535, got 0" in text
    assert "database.args.database: required for PostgreSQL" in text


def test_open_registration_needs_explicit_opt_in(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"server_name": "a.b", "enable_registration": True}, base_dir=tmp_path)
    assert "enable_registration_without_verification" in str(info.value)
    ok = parse_config(
        {"server_name": "a.b", "enable_registration": True, "registration_requires_token": True},
        base_dir=tmp_path,
    )
    assert ok.registration.enabled and ok.registration.requires_token


def test_rate_limits(tmp_path: Path) -> None:
    config = parse_config(
        {
            "server_name": "a.b",
            "rc_message": {"per_second": None, "burst_count": 3},
            "rc_login": {"address": {"per_second": 2, "burst_count": 4}, "account": None},
            "rc_joins": {"remote": {"burst_count": 7}},
        },
        base_dir=tmp_path,
    )
    limits = config.ratelimit
    assert limits.message.unlimited
    assert limits.login_address == RateLimit(2.0, 4)
    assert limits.login_account.unlimited
    assert limits.login_failed_attempts == RateLimit(0.17, 3)
    assert limits.joins_remote == RateLimit(0.01, 7)
    assert limits.get("login_address") == RateLimit(2.0, 4)
    off = parse_config({"server_name": "a.b", "rc_enabled": False}, base_dir=tmp_path)
    assert off.ratelimit.get("message").unlimited
    assert off.ratelimit.message == RateLimit(0.2, 10)  # value kept, switch wins


def test_durations_and_sizes() -> None:
    assert parse_duration_ms(1500) == 1500
    assert parse_duration_ms("30s") == 30_000
    assert parse_duration_ms("2h") == 7_200_000
    assert parse_duration_ms("1d") == 86_400_000
    assert parse_duration_ms("1w") == 604_800_000
    assert parse_duration_ms("250ms") == 250
    assert parse_size(1000) == 1000
    assert parse_size("512K") == 512 * 1024
    assert parse_size("50M") == 50 * 1024**2
    assert parse_size("1g") == 1024**3
    for bad in ("soon", -1, True, "1x"):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)
    for bad in ("big", -5, False, "1.5M"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_keys_federation_and_well_known_settings(tmp_path: Path) -> None:
    key = "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
    config = parse_config(
        {
            "server_name": "example.com:8448",
            "public_baseurl": "https://matrix.example.com",
            "old_signing_keys": {"ed25519:old": {"key": key, "expired_ts": 1234}},
            "key_refresh_interval": "12h",
            "trusted_key_servers": [
                {"server_name": "matrix.org", "verify_keys": {"ed25519:auto": key}}
            ],
            "ip_range_whitelist": ["127.0.0.2/32"],
            "federation_domain_whitelist": ["a.example", "b.example:8448"],
            "serve_server_wellknown": True,
        },
        base_dir=tmp_path,
    )
    assert config.public_baseurl == "https://matrix.example.com/"
    assert config.well_known.client_base_url == "https://matrix.example.com/"
    assert config.keys.old_signing_keys["ed25519:old"].expired_ts == 1234
    assert config.keys.key_refresh_interval_ms == 12 * 3_600_000
    (trusted,) = config.keys.trusted_key_servers
    assert trusted.server_name == "matrix.org" and trusted.verify_keys == {"ed25519:auto": key}
    fed = config.federation
    assert fed.is_ip_blocked("127.0.0.1")
    assert fed.is_ip_blocked("::ffff:127.0.0.1")  # IPv4-mapped cannot bypass the list
    assert fed.is_ip_blocked("10.1.2.3") and fed.is_ip_blocked("fe80::1")
    assert not fed.is_ip_blocked("127.0.0.2")  # whitelisted
    assert not fed.is_ip_blocked(ipaddress.ip_address("8.8.8.8"))
    assert fed.allows_domain("b.example:8448") and not fed.allows_domain("c.example")

    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "server_name": "a.b",
                "old_signing_keys": {"ed25519:x": {"key": "AAAA"}},
                "trusted_key_servers": [{"verify_keys": {"ed25519:a": "not base64!"}}],
                "ip_range_blacklist": ["10.0.0.0/8", "nonsense"],
                "public_baseurl": "ftp://x",
            },
            base_dir=tmp_path,
        )
    text = str(info.value)
    assert "old_signing_keys.ed25519:x.key: an ed25519 key is 32 bytes, this one is 3" in text
    assert "old_signing_keys.ed25519:x.expired_ts: required" in text
    assert "trusted_key_servers[0].server_name: required" in text
    assert "trusted_key_servers[0].verify_keys.ed25519:a: not valid base64" in text
    assert "ip_range_blacklist[1]: not an IP address or CIDR range: 'nonsense'" in text
    assert "public_baseurl: expected an http(s) URL" in text


def test_tls_listener_requires_existing_files(tmp_path: Path) -> None:
    raw = {
        "server_name": "a.b",
        "listeners": [{"port": 8448, "tls": True, "resources": [{"names": ["federation"]}]}],
        "tls_certificate_path": "cert.pem",
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, base_dir=tmp_path)
    assert info.value.problems == [
        f"<config>: tls_certificate_path: no such file: {tmp_path / 'cert.pem'}",
        "<config>: tls_private_key_path: required because a listener has tls: true",
    ]


def test_generated_config_loads_back_and_mentions_every_key(tmp_path: Path) -> None:
    text = generate_config("example.org", "state", port=9000)
    for key in KNOWN_KEYS:
        assert f"\n{key}:" in text or f"\n#{key}:" in text, key
    config = load_config(write(tmp_path / "homeserver.yaml", text))
    assert config.server_name == "example.org"
    assert config.listeners[0].port == 9000
    assert config.listeners[0].bind_addresses == ("127.0.0.1",)
    assert config.registration.enabled is False  # safe default
    assert config.database.path == tmp_path / "state" / "homeserver.db"
    assert config.keys.signing_key_path == tmp_path / "state" / "example.org.signing.key"
    assert config.ratelimit == parse_config({"server_name": "x.y"}, base_dir=tmp_path).ratelimit
    with pytest.raises(ValueError):
        generate_config("not a server name")


def test_example_config_is_the_open_registration_quick_start() -> None:
    example = REPO / "config.example.yaml"
    assert example.read_text(encoding="utf-8") == generate_config(
        "localhost", "data", open_registration=True
    )
    config = load_config(example)
    assert config.registration.enabled and config.registration.without_verification
    assert all(lst.bind_addresses == ("127.0.0.1",) for lst in config.listeners)
    assert config.database.path == REPO / "data" / "homeserver.db"


def test_secrets_generated_once_and_never_overwritten(tmp_path: Path) -> None:
    config = parse_config({"server_name": "a.b"}, base_dir=tmp_path)
    first = ensure_secrets(config)
    path = config.secrets_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = yaml.safe_load(path.read_text())
    assert first.registration.shared_secret == stored["registration_shared_secret"]
    assert first.secrets.macaroon_secret_key == stored["macaroon_secret_key"]
    assert first.secrets.form_secret == stored["form_secret"]
    assert len(first.secrets.form_secret) >= 40
    before = path.read_bytes()
    again = ensure_secrets(config)
    assert again.registration == first.registration and path.read_bytes() == before
    assert read_stored_shared_secret(config) == stored["registration_shared_secret"]

    configured = parse_config(
        {"server_name": "a.b", "registration_shared_secret": "mine"}, base_dir=tmp_path
    )
    assert ensure_secrets(configured).registration.shared_secret == "mine"

    # Written out as null: the admin register API stays off, nothing is filled in.
    disabled = parse_config(
        {"server_name": "a.b", "registration_shared_secret": None}, base_dir=tmp_path
    )
    assert ensure_secrets(disabled).registration.shared_secret is None
    assert ensure_secrets(disabled).secrets == first.secrets
    assert read_stored_shared_secret(disabled) is None

    path.write_text("registration_shared_secret: x\n")
    broken = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        ensure_secrets(config)
    assert "macaroon_secret_key" in str(info.value)
    assert path.read_bytes() == broken


def test_shared_secret_path(tmp_path: Path) -> None:
    write(tmp_path / "secret.txt", "s3cret\n")
    config = parse_config(
        {"server_name": "a.b", "registration_shared_secret_path": "secret.txt"}, base_dir=tmp_path
    )
    assert config.registration.shared_secret == "s3cret"
    os.remove(tmp_path / "secret.txt")
    with pytest.raises(ConfigError, match="registration_shared_secret_path: cannot read"):
        parse_config(
            {"server_name": "a.b", "registration_shared_secret_path": "secret.txt"},
            base_dir=tmp_path,
        )


def test_ignored_synapse_keys_are_accepted(tmp_path: Path) -> None:
    config = parse_config(
        {"server_name": "a.b", "report_stats": False, "pid_file": "x.pid"},
        base_dir=tmp_path,
    )
    assert config.ignored_keys == ("pid_file", "report_stats")


def test_every_synapse_setting_is_accepted_and_named_when_ignored(tmp_path: Path) -> None:
    """A Synapse homeserver.yaml starts us: each of its settings we do not implement is
    listed (the server logs a warning naming it); our own settings are read, not listed;
    a key neither server knows is still an error with a suggestion."""
    from homeserver.config import KNOWN_KEYS
    from homeserver.config.synapse_keys import SYNAPSE_TOP_LEVEL_KEYS

    extra = {k: None for k in SYNAPSE_TOP_LEVEL_KEYS if k not in KNOWN_KEYS}
    config = parse_config(
        {"server_name": "a.b", **extra, "serve_server_wellknown": True}, base_dir=tmp_path
    )
    assert set(config.ignored_keys) == set(extra)
    assert "serve_server_wellknown" not in config.ignored_keys
    assert {"enable_media_repo", "sso", "email", "user_directory"} & set(extra) <= set(
        config.ignored_keys
    )
    with pytest.raises(ConfigError) as exc:
        parse_config({"server_name": "a.b", "serve_server_wellknowm": True}, base_dir=tmp_path)
    assert (
        exc.value.problems
        == [
            "<config>: serve_server_wellknowm: unknown setting (did you mean 'serve_server_wellknown'?)"
        ]
        or "did you mean 'serve_server_wellknown'" in exc.value.problems[0]
    )


async def test_startup_warns_naming_ignored_synapse_settings(tmp_path: Path, caplog) -> None:
    """What the operator sees: the warning names the setting."""
    import logging

    from homeserver.__main__ import _warn_ignored

    config = parse_config(
        {"server_name": "a.b", "saml2_config": {}, "cas_config": {}}, base_dir=tmp_path
    )
    with caplog.at_level(logging.WARNING):
        _warn_ignored(config)
    text = caplog.text
    assert "'cas_config'" in text and "'saml2_config'" in text and "not implemented" in text


def test_log_config_is_read_relative_to_the_config_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / "x.log.config").write_text("version: 1\n")
    config = parse_config({"server_name": "a.b", "log_config": "x.log.config"}, base_dir=tmp_path)
    assert config.log_config == tmp_path / "x.log.config"
    assert config.ignored_keys == ()
    with pytest.raises(ConfigError) as exc:
        parse_config({"server_name": "a.b", "log_config": "missing.yaml"}, base_dir=tmp_path)
    assert any("log_config" in p and "no such file" in p for p in exc.value.problems)


def test_metrics_listener_and_server_notices_sections(tmp_path: Path) -> None:
    config = parse_config(
        {
            "server_name": "a.b",
            "enable_metrics": True,
            "listeners": [
                {"port": 8008, "resources": [{"names": ["client"]}]},
                {"port": 9000, "type": "metrics", "bind_addresses": ["127.0.0.1"]},
            ],
            "server_notices": {"system_mxid_localpart": "notices", "auto_join": True},
        },
        base_dir=tmp_path,
    )
    assert config.enable_metrics is True
    assert config.listeners[1].resources == frozenset({"metrics"})
    assert config.server_notices is not None
    assert config.server_notices.system_mxid_localpart == "notices"
    assert config.server_notices.auto_join is True
    assert config.server_notices.room_name == "Server Notices"
    with pytest.raises(ConfigError) as exc:
        parse_config(
            {"server_name": "a.b", "server_notices": {"system_mxid_localpart": "No Spaces"}},
            base_dir=tmp_path,
        )
    assert any("system_mxid_localpart" in p for p in exc.value.problems)


def test_federation_backoff_section(tmp_path: Path) -> None:
    """Synapse's `federation:` keys set the sender's backoff; its per-request retry
    keys are accepted; nonsense is reported, all at once. (Every loopback federation
    test runs on such a section: tests/federation/multiserver.FAST_BACKOFF.)"""
    default = parse_config({"server_name": "x.y"}, base_dir=tmp_path).federation
    assert (default.destination_min_retry_interval_ms, default.request_timeout_ms) == (
        10_000,
        60_000,
    )
    config = parse_config(
        {
            "server_name": "x.y",
            "federation": {
                "destination_min_retry_interval": "30s",
                "destination_retry_multiplier": 3,
                "destination_max_retry_interval": "1d",
                "client_timeout": 5000,
                "max_short_retries": 3,
            },
        },
        base_dir=tmp_path,
    ).federation
    assert config.destination_min_retry_interval_ms == 30_000
    assert config.destination_retry_multiplier == 3.0
    assert config.destination_max_retry_interval_ms == 86_400_000
    assert config.request_timeout_ms == 5000
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "server_name": "x.y",
                "federation": {
                    "destination_min_retry_interval": "2h",
                    "destination_max_retry_interval": "1h",
                    "destination_retry_multiplier": 0.5,
                    "client_timeout": 0,
                    "retries": 1,
                },
            },
            base_dir=tmp_path,
        )
    assert sorted(p.split(": ")[1] for p in info.value.problems) == [
        "federation.client_timeout",
        "federation.destination_max_retry_interval",
        "federation.destination_retry_multiplier",
        "federation.retries",
    ]


async def test_the_sender_backs_off_as_configured(tmp_path: Path, aiohttp_client) -> None:
    from federation.appkeys import SENDER
    from homeserver.app import create_app
    from tests.conftest import make_config

    client = await aiohttp_client(
        create_app(make_config(tmp_path, federation={"destination_min_retry_interval": "250ms"}))
    )
    settings = client.app[SENDER].settings
    assert (settings.min_retry_interval_s, settings.max_retry_interval_s) == (0.25, 3600.0)
    assert (settings.retry_multiplier, settings.request_timeout_s) == (2.0, 60.0)


def test_gc_thresholds_are_read_and_applied_once_started(tmp_path: Path) -> None:
    """Synapse's `gc_thresholds`: a list of up to three positive integers, with a
    default for a server (not Python's [700, 10, 10]); what the server sets at start."""
    import gc

    from homeserver.__main__ import settle_gc
    from homeserver.config.values import describe

    assert parse_config({"server_name": "a.b"}, base_dir=tmp_path).gc_thresholds == (50000, 20, 20)
    config = parse_config({"server_name": "a.b", "gc_thresholds": [9000, 7, 5]}, base_dir=tmp_path)
    assert config.gc_thresholds == (9000, 7, 5)
    assert config.ignored_keys == ()
    for bad in ([0, 10, 10], [1, 2, 3, 4], "700", [700, "10"], [], [True]):
        with pytest.raises(ConfigError) as exc:
            parse_config({"server_name": "a.b", "gc_thresholds": bad}, base_dir=tmp_path)
        assert exc.value.problems == [
            "<config>: gc_thresholds: expected a list of one to three positive integers, got "
            + describe(bad)
        ]
    before = gc.get_threshold()
    try:
        settle_gc(config)
        assert gc.get_threshold() == (9000, 7, 5)
        assert gc.get_freeze_count() > 0  # start-up objects out of the collections
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_secrets_read_from_files(tmp_path: Path) -> None:
    """macaroon_secret_key_path and form_secret_path (Synapse's): Docker-style secret
    files; one of the inline key and its file, not both."""
    (tmp_path / "mac").write_text("mac-secret\n")
    (tmp_path / "form").write_text("form-secret")
    config = parse_config(
        {
            "server_name": "a.b",
            "macaroon_secret_key_path": str(tmp_path / "mac"),
            "form_secret_path": str(tmp_path / "form"),
        },
        base_dir=tmp_path,
    )
    assert (config.secrets.macaroon_secret_key, config.secrets.form_secret) == (
        "mac-secret",
        "form-secret",
    )
    with pytest.raises(ConfigError, match="form_secret_path"):
        parse_config(
            {"server_name": "a.b", "form_secret": "x", "form_secret_path": str(tmp_path / "form")},
            base_dir=tmp_path,
        )
