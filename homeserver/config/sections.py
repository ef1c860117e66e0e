"""Readers for the structured sections: listeners, database, keys, support, rate limits
and federation. Each checks its section's keys and values through the collecting
`Reader` and returns the section's dataclass (or a safe default after a problem).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from canonicaljson import encode_canonical_json

from homeserver.config.model import (
    DEFAULT_IP_RANGE_BLACKLIST,
    RESOURCE_NAMES,
    UNLIMITED,
    DatabaseConfig,
    FederationConfig,
    FederationRateLimit,
    IPNetwork,
    ListenerConfig,
    OldVerifyKey,
    RateLimit,
    RateLimitConfig,
    ServerNoticesConfig,
    SupportConfig,
    SupportContact,
    TrustedKeyServer,
)
from homeserver.config.reader import MISSING, Reader, describe, join_path, suggest
from homeserver.config.values import (
    parse_duration_ms,
    parse_key_base64,
    parse_network,
    parse_server_name,
    parse_size,
)


def read_listeners(r: Reader, raw: Any) -> tuple[ListenerConfig, ...]:
    if raw is None:
        return (ListenerConfig(port=8008),)
    if not isinstance(raw, list) or not raw:
        r.problem("listeners", f"expected a non-empty list, got {describe(raw)}")
        return ()
    result = []
    allowed = {"port", "bind_addresses", "type", "tls", "x_forwarded", "resources"}
    for i, item in enumerate(raw):
        where = f"listeners[{i}]"
        m = r.mapping(item, where)
        if m is None:
            if item is None:
                r.problem(where, "expected a mapping, got nothing")
            continue
        r.check_keys(m, allowed, where)
        if r.raw(m, "port") is MISSING:
            r.problem(join_path(where, "port"), "required (the TCP port to listen on)")
        port = r.int(m, "port", where, 0, 0, 65535)
        addresses = r.str_list(m, "bind_addresses", where)
        if addresses is None:
            addresses = ["127.0.0.1"]
        for j, address in enumerate(addresses):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                r.problem(f"{where}.bind_addresses[{j}]", f"not an IP address: {address!r}")
        if not addresses:
            r.problem(join_path(where, "bind_addresses"), "must list at least one address")
        kind = r.str(m, "type", where, "http")
        if kind not in ("http", "metrics"):
            r.problem(
                join_path(where, "type"),
                f"only 'http' and 'metrics' listeners are supported, got {kind!r}",
            )
        tls = r.bool(m, "tls", where, False)
        x_forwarded = r.bool(m, "x_forwarded", where, False)
        if kind == "metrics":
            # Synapse's `type: metrics` listener: /_synapse/metrics and nothing else.
            resources = frozenset({"metrics"})
        else:
            resources = _read_resources(r, m, where)
        result.append(
            ListenerConfig(
                port=port,
                bind_addresses=tuple(addresses),
                type="metrics" if kind == "metrics" else "http",
                tls=tls,
                x_forwarded=x_forwarded,
                resources=resources,
            )
        )
    seen: dict[int, int] = {}
    for i, listener in enumerate(result):
        if listener.port and listener.port in seen:
            r.problem(
                f"listeners[{i}].port",
                f"port {listener.port} is also used by listeners[{seen[listener.port]}]; "
                "use one listener with several bind_addresses and resources",
            )
        seen.setdefault(listener.port, i)
    return tuple(result)


def read_server_notices(r: Reader, raw: Any) -> ServerNoticesConfig | None:
    """Synapse's `server_notices` section; None (notices off) when absent."""
    if raw is None:
        return None
    m = r.mapping(raw, "server_notices")
    if m is None:
        return None
    where = "server_notices"
    r.check_keys(
        m,
        {
            "system_mxid_localpart",
            "system_mxid_display_name",
            "system_mxid_avatar_url",
            "room_name",
            "room_avatar_url",
            "room_topic",
            "auto_join",
        },
        where,
    )
    localpart = r.str(m, "system_mxid_localpart", where)
    if not localpart:
        r.problem(f"{where}.system_mxid_localpart", "required, e.g. 'notices'")
        return None
    if not re.fullmatch(r"[a-z0-9._=\-/+]+", localpart):
        r.problem(f"{where}.system_mxid_localpart", f"not a valid user ID localpart: {localpart!r}")
        return None
    for key in ("system_mxid_avatar_url", "room_avatar_url"):
        value = r.str(m, key, where)
        if value is not None and not str(value).startswith("mxc://"):
            r.problem(f"{where}.{key}", "must be an mxc:// URI")
    return ServerNoticesConfig(
        system_mxid_localpart=localpart,
        system_mxid_display_name=r.str(m, "system_mxid_display_name", where),
        system_mxid_avatar_url=r.str(m, "system_mxid_avatar_url", where),
        room_name=r.str(m, "room_name", where, "Server Notices"),
        room_avatar_url=r.str(m, "room_avatar_url", where),
        room_topic=r.str(m, "room_topic", where),
        auto_join=r.bool(m, "auto_join", where, False),
    )


def _read_resources(r: Reader, m: Mapping[str, Any], where: str) -> frozenset[str]:
    items = r.list(m, "resources", where)
    if items is None:
        r.problem(join_path(where, "resources"), "required, e.g. [{names: [client, federation]}]")
        return frozenset()
    names: set[str] = set()
    for i, item in enumerate(items):
        iw = f"{where}.resources[{i}]"
        rm = r.mapping(item, iw)
        if rm is None:
            continue
        r.check_keys(rm, {"names", "compress"}, iw)
        r.bool(rm, "compress", iw, False)
        for j, name in enumerate(r.str_list(rm, "names", iw) or []):
            if name in RESOURCE_NAMES:
                names.add(name)
            else:
                r.problem(
                    f"{iw}.names[{j}]",
                    f"unknown resource {name!r}; known: {', '.join(RESOURCE_NAMES)}"
                    + suggest(name, set(RESOURCE_NAMES)),
                )
    return frozenset(names)


def read_database(r: Reader, raw: Any) -> DatabaseConfig:
    default = DatabaseConfig(name="sqlite3", path=r.resolve("homeserver.db"))
    m = r.mapping(raw, "database")
    if m is None:
        return default
    r.check_keys(m, {"name", "args", "allow_unsafe_locale", "txn_limit"}, "database")
    name = r.str(m, "name", "database", "sqlite3")
    if name in _POSTGRES_NAMES:
        return _read_postgres(r, m, default)
    if name != "sqlite3":
        r.problem("database.name", f"expected 'sqlite3' or 'psycopg2', got {name!r}")
        return default
    args = r.mapping(m.get("args"), "database.args")
    if args is not None:
        r.check_keys(args, {"database", "cp_min", "cp_max"}, "database.args")
    path = r.path(args, "database", "database.args", default.path)
    return DatabaseConfig(name="sqlite3", path=path or default.path)


_POSTGRES_NAMES = ("psycopg2", "postgres", "postgresql", "psycopg")
_POSTGRES_STR_ARGS = ("user", "password", "database", "dbname", "host", "dsn", "sslmode", "schema")


def _read_postgres(r: Reader, m: Mapping[str, Any], default: DatabaseConfig) -> DatabaseConfig:
    """Synapse's PostgreSQL args: user, password, database, host, port, cp_min, cp_max
    (and libpq's sslmode, or a whole dsn; ours: schema, a schema other than public)."""
    args = r.mapping(m.get("args"), "database.args") or {}
    r.check_keys(args, {*_POSTGRES_STR_ARGS, "port", "cp_min", "cp_max"}, "database.args")
    connect: dict[str, Any] = {}
    for key in _POSTGRES_STR_ARGS:
        value = r.str(args, key, "database.args")
        if value is not None:
            connect["database" if key == "dbname" else key] = value
    if "port" in args:
        connect["port"] = r.int(args, "port", "database.args", 5432, 1, 65535)
    cp_min = r.int(args, "cp_min", "database.args", 1, 1, 1000)
    cp_max = r.int(args, "cp_max", "database.args", 10, 1, 1000)
    if cp_max < cp_min:
        r.problem("database.args.cp_max", f"must be at least cp_min ({cp_min}), got {cp_max}")
    connect.update(cp_min=cp_min, cp_max=max(cp_min, cp_max))
    if "dsn" not in connect and "database" not in connect:
        r.problem("database.args.database", "required for PostgreSQL (the database name)")
    return DatabaseConfig(name="psycopg2", path=default.path, connect=tuple(connect.items()))


_ROLE = re.compile(r"^m\.role\.(admin|security)$|^(?!m\.)[a-z0-9_.-]+\.[a-z0-9_.-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def read_json_mapping(r: Reader, top: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A mapping served to clients as JSON as it is (YAML dates and the like refused)."""
    m = r.mapping(top.get(key), key)
    if m is None:
        return {}
    try:
        encode_canonical_json(m)
    except (TypeError, ValueError) as exc:
        r.problem(key, f"must hold JSON values only: {exc}")
        return {}
    return dict(m)


def read_rtc_transports(r: Reader, top: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """`matrix_rtc: {transports: [{type: livekit, livekit_service_url: ...}, ...]}`."""
    m = r.mapping(top.get("matrix_rtc"), "matrix_rtc")
    if m is None:
        return ()
    r.check_keys(m, {"transports"}, "matrix_rtc")
    transports = []
    for i, item in enumerate(r.list(m, "transports", "matrix_rtc") or []):
        where = f"matrix_rtc.transports[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
            r.problem(where, "expected a mapping with a string 'type'")
            continue
        try:
            encode_canonical_json(item)
        except (TypeError, ValueError) as exc:
            r.problem(where, f"must hold JSON values only: {exc}")
            continue
        transports.append(dict(item))
    return tuple(transports)


def read_support(r: Reader, raw: Any) -> SupportConfig | None:
    """The optional `support` section: admin contacts and/or a support page URL."""
    m = r.mapping(raw, "support")
    if m is None:
        return None
    r.check_keys(m, {"contacts", "support_page"}, "support")
    page = r.str(m, "support_page", "support")
    if page is not None and not re.match(r"^https?://\S+$", page):
        r.problem("support.support_page", f"expected an http(s) URL, got {describe(page)}")
        page = None
    contacts = []
    for i, item in enumerate(r.list(m, "contacts", "support") or []):
        where = f"support.contacts[{i}]"
        cm = r.mapping(item, where)
        if cm is None:
            continue
        r.check_keys(cm, {"role", "matrix_id", "email_address"}, where)
        role = r.str(cm, "role", where)
        if role is None or not _ROLE.match(role):
            r.problem(
                join_path(where, "role"),
                "required: m.role.admin, m.role.security or a namespaced role (com.example.x)",
            )
        matrix_id = r.str(cm, "matrix_id", where)
        if matrix_id is not None and not re.match(r"^@[^:\s]+:\S+$", matrix_id):
            r.problem(join_path(where, "matrix_id"), f"expected a user ID, got {matrix_id!r}")
        email = r.str(cm, "email_address", where)
        if email is not None and not _EMAIL.match(email):
            r.problem(
                join_path(where, "email_address"), f"expected an email address, got {email!r}"
            )
        if matrix_id is None and email is None:
            r.problem(where, "needs a matrix_id or an email_address")
        elif role is not None:
            contacts.append(SupportContact(role, matrix_id, email))
    if not contacts and page is None:
        r.problem("support", "set support_page or at least one contact (or leave it out)")
        return None
    return SupportConfig(tuple(contacts), page)


def read_old_keys(r: Reader, raw: Any) -> Mapping[str, OldVerifyKey]:
    m = r.mapping(raw, "old_signing_keys")
    result: dict[str, OldVerifyKey] = {}
    for key_id, entry in (m or {}).items():
        where = f"old_signing_keys.{key_id}"
        if not isinstance(key_id, str) or not re.match(r"^ed25519:[A-Za-z0-9_]+$", key_id):
            r.problem(where, "key ids look like 'ed25519:abc_1' (letters, digits, underscore)")
            continue
        em = r.mapping(entry, where)
        if em is None:
            r.problem(where, "expected a mapping with 'key' and 'expired_ts'")
            continue
        r.check_keys(em, {"key", "expired_ts"}, where)
        key = r.converted(em, "key", where, None, parse_key_base64)
        expired = r.int(em, "expired_ts", where, -1, 0)
        if r.raw(em, "key") is MISSING:
            r.problem(join_path(where, "key"), "required")
        if r.raw(em, "expired_ts") is MISSING:
            r.problem(join_path(where, "expired_ts"), "required (ms since the epoch)")
        if key is not None and expired >= 0:
            result[key_id] = OldVerifyKey(key=key, expired_ts=expired)
    return MappingProxyType(result)


def read_trusted_key_servers(r: Reader, raw: Any) -> tuple[TrustedKeyServer, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problem("trusted_key_servers", f"expected a list, got {describe(raw)}")
        return ()
    result = []
    for i, item in enumerate(raw):
        where = f"trusted_key_servers[{i}]"
        m = r.mapping(item, where)
        if m is None:
            continue
        r.check_keys(m, {"server_name", "verify_keys", "accept_keys_insecurely"}, where)
        name = r.converted(m, "server_name", where, None, parse_server_name)
        if r.raw(m, "server_name") is MISSING:
            r.problem(join_path(where, "server_name"), "required")
        verify_keys: Mapping[str, Any] | None = None
        vm = r.mapping(m.get("verify_keys"), join_path(where, "verify_keys"))
        if vm is not None:
            parsed: dict[str, Any] = {}
            for key_id in vm:
                key = r.converted(
                    vm, key_id, join_path(where, "verify_keys"), None, parse_key_base64
                )
                if key is not None:
                    parsed[key_id] = key
            verify_keys = MappingProxyType(parsed)
        insecure = r.bool(m, "accept_keys_insecurely", where, False)
        if name is not None:
            result.append(TrustedKeyServer(name, verify_keys, insecure))
    return tuple(result)


def _read_rate_limit(
    r: Reader, parent: Mapping[str, Any] | None, key: str, where: str, default: RateLimit
) -> RateLimit:
    """`key: {per_second, burst_count}` in `parent`; an explicit `key: null` means unlimited."""
    if parent is not None and key in parent and parent[key] is None:
        return UNLIMITED
    m = r.mapping(parent.get(key) if parent is not None else None, where)
    if m is None:
        return default
    r.check_keys(m, {"per_second", "burst_count"}, where)
    per_second: float | None = default.per_second
    if "per_second" in m:
        value = m["per_second"]
        if value is None:
            per_second = None
        elif isinstance(value, bool) or not isinstance(value, int | float):
            r.problem(
                join_path(where, "per_second"), f"expected a number or null, got {describe(value)}"
            )
        elif not math.isfinite(value) or value <= 0:
            r.problem(
                join_path(where, "per_second"), "expected a positive number (null = unlimited)"
            )
        else:
            per_second = float(value)
    burst = r.int(m, "burst_count", where, default.burst_count, 1)
    return RateLimit(per_second, burst)


# YAML key -> RateLimitConfig field, for the flat `rc_*: {per_second, burst_count}` keys.
RC_FLAT = {
    "rc_message": "message",
    "rc_registration": "registration",
    "rc_registration_token_validity": "registration_token_validity",
    "rc_joins_per_room": "joins_per_room",
    "rc_admin_redaction": "admin_redaction",
    "rc_third_party_invite": "third_party_invite",
    "rc_media_create": "media_create",
    "rc_delayed_event_mgmt": "delayed_event_mgmt",
    "rc_3pid_validation": "threepid_validation",
    "rc_room_creation": "room_creation",
    "rc_reports": "reports",
}
# YAML key -> {sub key -> field} for the nested ones.
RC_NESTED = {
    "rc_login": {
        "address": "login_address",
        "account": "login_account",
        "failed_attempts": "login_failed_attempts",
    },
    "rc_joins": {"local": "joins_local", "remote": "joins_remote"},
    "rc_presence": {"per_user": "presence"},
    "rc_invites": {
        "per_room": "invites_per_room",
        "per_user": "invites_per_user",
        "per_issuer": "invites_per_issuer",
    },
}


_FEDERATION_LIMIT_KEYS = {
    "window_size": "window_size_ms",
    "sleep_limit": "sleep_limit",
    "sleep_delay": "sleep_delay_ms",
    "reject_limit": "reject_limit",
    "concurrent": "concurrent",
}


def _read_federation_limit(r: Reader, top: Mapping[str, Any]) -> FederationRateLimit:
    """rc_federation: whole numbers (window_size and sleep_delay in ms), each at least 1
    (sleep_delay may be 0)."""
    m = r.mapping(top.get("rc_federation"), "rc_federation")
    if m is None:
        return FederationRateLimit()
    r.check_keys(m, set(_FEDERATION_LIMIT_KEYS), "rc_federation")
    values: dict[str, int] = {}
    for key, name in _FEDERATION_LIMIT_KEYS.items():
        value = m.get(key)
        if value is None:
            continue
        least = 0 if key == "sleep_delay" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            r.problem(f"rc_federation.{key}", f"expected a whole number of at least {least}")
            continue
        values[name] = value
    return FederationRateLimit(**values)


def read_rate_limits(r: Reader, top: Mapping[str, Any]) -> RateLimitConfig:
    defaults = RateLimitConfig()
    values: dict[str, Any] = {"enabled": r.bool(top, "rc_enabled", "", True)}
    for key, name in RC_FLAT.items():
        values[name] = _read_rate_limit(r, top, key, key, getattr(defaults, name))
    for key, subs in RC_NESTED.items():
        m = r.mapping(top.get(key), key)
        if m is not None:
            r.check_keys(m, set(subs), key)
        for sub, name in subs.items():
            values[name] = _read_rate_limit(r, m, sub, f"{key}.{sub}", getattr(defaults, name))
    values["federation"] = _read_federation_limit(r, top)
    values["remote_media_download"] = RateLimit(
        r.converted(top, "remote_media_download_per_second", "", 87 * 1024, parse_size),
        r.converted(top, "remote_media_download_burst_count", "", 500 * 1024**2, parse_size),
    )
    return RateLimitConfig(**values)


def read_federation(r: Reader, top: Mapping[str, Any]) -> FederationConfig:
    def networks(key: str, default: tuple[str, ...]) -> tuple[IPNetwork, ...]:
        items = r.list(top, key, "")
        if items is None:
            items = list(default)
        result = []
        for i, item in enumerate(items):
            try:
                result.append(parse_network(item))
            except ValueError as exc:
                r.problem(f"{key}[{i}]", str(exc))
        return tuple(result)

    domains = None
    names = r.list(top, "federation_domain_whitelist", "")
    if names is not None:
        domains = set()
        for i, item in enumerate(names):
            try:
                domains.add(parse_server_name(item))
            except ValueError as exc:
                r.problem(f"federation_domain_whitelist[{i}]", str(exc))
    cas = tuple(r.resolve(p) for p in (r.str_list(top, "federation_custom_ca_list", "") or []))
    for i, ca in enumerate(cas):
        if not ca.is_file():
            r.problem(f"federation_custom_ca_list[{i}]", f"no such file: {ca}")
    backoff = read_federation_backoff(r, r.mapping(top.get("federation"), "federation"))
    return FederationConfig(
        **backoff,
        verify_certificates=r.bool(top, "federation_verify_certificates", "", True),
        custom_ca_list=cas,
        ip_range_blacklist=networks("ip_range_blacklist", DEFAULT_IP_RANGE_BLACKLIST),
        ip_range_whitelist=networks("ip_range_whitelist", ()),
        domain_whitelist=frozenset(domains) if domains is not None else None,
        allow_public_rooms_over_federation=r.bool(
            top, "allow_public_rooms_over_federation", "", False
        ),
        allow_device_name_lookup_over_federation=r.bool(
            top, "allow_device_name_lookup_over_federation", "", False
        ),
        allow_profile_lookup_over_federation=r.bool(
            top, "allow_profile_lookup_over_federation", "", True
        ),
        plain_http_for_tests=r.bool(top, "federation_client_plain_http_for_tests", "", False),
        client_minimum_tls_version=r.converted(
            top, "federation_client_minimum_tls_version", "", None, _tls_version
        ),
        certificate_verification_whitelist=tuple(
            r.str_list(top, "federation_certificate_verification_whitelist", "") or ()
        ),
    )


def _tls_version(value: Any) -> str:
    text = str(value)  # YAML reads 1.2 as a number
    if text not in ("1", "1.0", "1.1", "1.2", "1.3"):
        raise ValueError("expected one of 1, 1.1, 1.2, 1.3")
    return "1" if text == "1.0" else text


# Synapse's `federation:` keys we accept without acting on them (its per-request retry
# schedule; ours retries a whole destination on the backoff below).
_SYNAPSE_ONLY_BACKOFF_KEYS = frozenset(
    {"max_short_retry_delay", "max_long_retry_delay", "max_short_retries", "max_long_retries"}
)
_BACKOFF_KEYS = {
    "destination_min_retry_interval": "destination_min_retry_interval_ms",
    "destination_max_retry_interval": "destination_max_retry_interval_ms",
    "client_timeout": "request_timeout_ms",
}


def read_federation_backoff(r: Reader, m: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `federation:` section: how the sender backs off from an unreachable server."""
    defaults = FederationConfig()
    values: dict[str, Any] = {}
    if m is not None:
        r.check_keys(
            m,
            {*_BACKOFF_KEYS, "destination_retry_multiplier", *_SYNAPSE_ONLY_BACKOFF_KEYS},
            "federation",
        )
    for key, name in _BACKOFF_KEYS.items():
        values[name] = r.converted(m, key, "federation", getattr(defaults, name), parse_duration_ms)
        if values[name] < 1:
            r.problem(f"federation.{key}", "must be longer than 0")
            values[name] = getattr(defaults, name)

    def multiplier(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
            raise ValueError(f"expected a number of at least 1, got {describe(value)}")
        return float(value)

    values["destination_retry_multiplier"] = r.converted(
        m, "destination_retry_multiplier", "federation", 2.0, multiplier
    )
    if values["destination_max_retry_interval_ms"] < values["destination_min_retry_interval_ms"]:
        r.problem(
            "federation.destination_max_retry_interval",
            "must not be shorter than destination_min_retry_interval",
        )
        values["destination_max_retry_interval_ms"] = values["destination_min_retry_interval_ms"]
    return values
