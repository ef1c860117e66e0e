"""The homeserver configuration: Synapse's homeserver.yaml names, typed and checked once.

`load_config(path)` reads a YAML file and returns a frozen `Config` made of one frozen
dataclass per section. It never stops at the first mistake: every problem (which file,
which key path, what was expected) is collected and raised together in one
`ConfigError`, so a user fixes their file in one go. Nothing else in the server reads
YAML or guesses defaults.

Relative paths in the file resolve against the folder that holds the config file, not
the working directory, so `python -m homeserver -c some/dir/config.yaml` behaves the
same from anywhere.

`ensure_secrets(config)` is the one startup side effect kept here: secrets that are not
configured are generated once and kept in a file next to the database.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import logging
import math
import os
import re
import secrets as _secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.ids import split_server_name

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOURCE_NAMES = ("client", "federation", "keys", "media", "metrics")

# The ranges Synapse refuses to contact by default: loopback, private, link-local,
# CGNAT, documentation, benchmarking, multicast and unspecified addresses.
DEFAULT_IP_RANGE_BLACKLIST: tuple[str, ...] = (
    "0.0.0.0/32",
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::/128",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
)

# Synapse keys we recognise but deliberately ignore (logged at startup), so a copied
# Synapse config does not fail for settings that have no meaning here.
IGNORED_SYNAPSE_KEYS = frozenset({"report_stats", "log_config", "pid_file"})


class ConfigError(Exception):
    """Every problem found in a configuration, one readable line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ListenerConfig:
    """One socket (per bind address) serving a set of resources over HTTP(S)."""

    port: int
    bind_addresses: tuple[str, ...] = ("127.0.0.1",)
    type: str = "http"
    tls: bool = False
    x_forwarded: bool = False
    resources: frozenset[str] = frozenset({"client", "federation"})


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the data lives. Only SQLite for now; `name` keeps Synapse's spelling."""

    name: str
    path: Path

    @property
    def args(self) -> Mapping[str, Any]:
        """Synapse's `args` shape, which homeserver.storage.open_database reads."""
        return MappingProxyType({"database": str(self.path)})


@dataclass(frozen=True)
class OldVerifyKey:
    """A key we signed with in the past, still published so old signatures verify."""

    key: str  # unpadded base64 ed25519 public key
    expired_ts: int  # ms since the epoch


@dataclass(frozen=True)
class TrustedKeyServer:
    """A notary we may ask for other servers' keys."""

    server_name: str
    verify_keys: Mapping[str, str] | None = None  # key id -> unpadded base64
    accept_keys_insecurely: bool = False


@dataclass(frozen=True)
class KeysConfig:
    signing_key_path: Path
    old_signing_keys: Mapping[str, OldVerifyKey] = field(
        default_factory=lambda: MappingProxyType({})
    )
    key_refresh_interval_ms: int = 86_400_000
    trusted_key_servers: tuple[TrustedKeyServer, ...] = ()
    suppress_key_server_warning: bool = False


@dataclass(frozen=True)
class TlsConfig:
    certificate_path: Path | None = None
    private_key_path: Path | None = None


@dataclass(frozen=True)
class RegistrationConfig:
    enabled: bool = False
    without_verification: bool = False
    requires_token: bool = False
    shared_secret: str | None = None  # enables the admin shared-secret register API


@dataclass(frozen=True)
class PasswordHashingConfig:
    """argon2id cost (libsodium units); defaults are libsodium's "interactive" profile.
    Tests and benchmarks may lower them (`password_hashing: {opslimit: 1, memlimit: 8192}`)."""

    # One of OWASP's equivalent argon2id profiles (m=7 MiB, t=5, p=1): the one with the
    # smallest memory, so a hash never doubles a small server's footprint.
    opslimit: int = 5
    memlimit: int = 7 * 1024 * 1024


@dataclass(frozen=True)
class FederationConfig:
    verify_certificates: bool = True
    custom_ca_list: tuple[Path, ...] = ()
    ip_range_blacklist: tuple[IPNetwork, ...] = ()
    ip_range_whitelist: tuple[IPNetwork, ...] = ()
    domain_whitelist: frozenset[str] | None = None  # None: federate with everyone
    allow_public_rooms_over_federation: bool = False
    # Outbound federation over plain http:// instead of https:// (loopback test
    # federations only; never in production: requests would be unencrypted).
    plain_http_for_tests: bool = False

    def is_ip_blocked(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether outbound requests to `address` are refused (whitelist wins).

        IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry, so
        `::ffff:127.0.0.1` cannot sneak past a 127.0.0.0/8 entry.
        """
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.ip_range_whitelist if net.version == ip.version):
            return False
        return any(ip in net for net in self.ip_range_blacklist if net.version == ip.version)

    def allows_domain(self, server_name: str) -> bool:
        return self.domain_whitelist is None or server_name in self.domain_whitelist


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `burst_count` actions, refilled at `per_second`; None = unlimited."""

    per_second: float | None
    burst_count: int

    @property
    def unlimited(self) -> bool:
        return self.per_second is None


UNLIMITED = RateLimit(per_second=None, burst_count=0)


@dataclass(frozen=True)
class RateLimitConfig:
    """Synapse's `rc_*` settings; `enabled: false` (our `rc_enabled`) turns all of them off."""

    enabled: bool = True
    message: RateLimit = RateLimit(0.2, 10)
    registration: RateLimit = RateLimit(0.17, 3)
    registration_token_validity: RateLimit = RateLimit(0.1, 5)
    login_address: RateLimit = RateLimit(0.003, 5)
    login_account: RateLimit = RateLimit(0.003, 5)
    login_failed_attempts: RateLimit = RateLimit(0.17, 3)
    joins_local: RateLimit = RateLimit(0.1, 10)
    joins_remote: RateLimit = RateLimit(0.01, 10)
    joins_per_room: RateLimit = RateLimit(1.0, 10)
    invites_per_room: RateLimit = RateLimit(0.3, 10)
    invites_per_user: RateLimit = RateLimit(0.003, 5)
    invites_per_issuer: RateLimit = RateLimit(0.3, 10)
    admin_redaction: RateLimit = UNLIMITED
    third_party_invite: RateLimit = RateLimit(0.2, 10)
    media_create: RateLimit = RateLimit(10.0, 50)

    def get(self, name: str) -> RateLimit:
        """The effective limit for `name` (a field name): unlimited when switched off."""
        limit = getattr(self, name)
        return limit if self.enabled else UNLIMITED


@dataclass(frozen=True)
class MediaConfig:
    store_path: Path
    max_upload_size: int = 50 * 1024 * 1024


@dataclass(frozen=True)
class SupportContact:
    role: str  # m.role.admin, m.role.security or a namespaced identifier
    matrix_id: str | None = None
    email_address: str | None = None


@dataclass(frozen=True)
class SupportConfig:
    """/.well-known/matrix/support (spec v1.10): at least one of the two is set."""

    contacts: tuple[SupportContact, ...] = ()
    support_page: str | None = None


@dataclass(frozen=True)
class WellKnownConfig:
    serve_server_wellknown: bool = False
    client_base_url: str | None = None  # what /.well-known/matrix/client advertises
    support: SupportConfig | None = None  # None: /.well-known/matrix/support is 404


@dataclass(frozen=True)
class SecretsConfig:
    macaroon_secret_key: str | None = None
    form_secret: str | None = None


@dataclass(frozen=True)
class Config:
    server_name: str
    listeners: tuple[ListenerConfig, ...]
    database: DatabaseConfig
    keys: KeysConfig
    media: MediaConfig
    public_baseurl: str | None = None
    tls: TlsConfig = TlsConfig()
    registration: RegistrationConfig = RegistrationConfig()
    password_hashing: PasswordHashingConfig = PasswordHashingConfig()
    federation: FederationConfig = FederationConfig()
    ratelimit: RateLimitConfig = RateLimitConfig()
    well_known: WellKnownConfig = WellKnownConfig()
    secrets: SecretsConfig = SecretsConfig()
    default_room_version: str = "12"
    max_request_body: int = 10 * 1024 * 1024
    log_level: str = "INFO"
    config_path: Path | None = None
    ignored_keys: tuple[str, ...] = ()

    @property
    def secrets_path(self) -> Path:
        """Generated secrets live next to the database: `<db name>.secrets.yaml`."""
        return self.database.path.with_suffix(".secrets.yaml")

    @property
    def resources(self) -> frozenset[str]:
        """Every resource some listener serves."""
        return frozenset().union(*(listener.resources for listener in self.listeners))


# --------------------------------------------------------------------------- reading

_MISSING: Any = object()


class _Reader:
    """Collects problems while reading values; every getter returns a usable default."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.source}: {where}: {message}" if where else message)

    # -- structure

    def mapping(self, value: Any, where: str) -> Mapping[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.problem(where, f"expected a mapping, got {_describe(value)}")
            return None
        bad = [k for k in value if not isinstance(k, str)]
        for k in bad:
            self.problem(where, f"keys must be strings, got {k!r}")
        return value

    def check_keys(self, m: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str):
        for key in m:
            if isinstance(key, str) and key not in allowed:
                self.problem(_join(where, key), "unknown key" + _suggest(key, allowed))

    def raw(self, m: Mapping[str, Any] | None, key: str) -> Any:
        """The value, or _MISSING when absent or empty (an empty value means the default)."""
        if m is None:
            return _MISSING
        value = m.get(key, _MISSING)
        return _MISSING if value is None else value

    # -- scalars

    def bool(self, m, key: str, where: str, default: bool) -> bool:
        value = self.raw(m, key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(_join(where, key), f"expected true or false, got {_describe(value)}")
            return default
        return value

    def int(
        self, m, key: str, where: str, default: int, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self.raw(m, key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(_join(where, key), f"expected an integer, got {_describe(value)}")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.problem(_join(where, key), f"expected an integer from {lo} to {hi}, got {value}")
            return default
        return value

    def str(self, m, key: str, where: str, default: Any = None) -> Any:
        value = self.raw(m, key)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not value:
            self.problem(_join(where, key), f"expected a non-empty string, got {_describe(value)}")
            return default
        return value

    def path(self, m, key: str, where: str, default: Path | None) -> Path | None:
        value = self.str(m, key, where)
        return default if value is None else self.resolve(value)

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(os.path.abspath(self.base_dir / path))

    def converted(self, m, key: str, where: str, default: Any, convert: Callable[[Any], Any]):
        """A value passed through `convert`, whose ValueError becomes a problem."""
        value = self.raw(m, key)
        if value is _MISSING:
            return default
        try:
            return convert(value)
        except ValueError as exc:
            self.problem(_join(where, key), str(exc))
            return default

    def list(self, m, key: str, where: str) -> list[Any] | None:
        value = self.raw(m, key)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            self.problem(_join(where, key), f"expected a list, got {_describe(value)}")
            return None
        return value

    def str_list(self, m, key: str, where: str) -> list[str] | None:
        items = self.list(m, key, where)
        if items is None:
            return None
        good = []
        for i, item in enumerate(items):
            if isinstance(item, str) and item:
                good.append(item)
            else:
                self.problem(
                    f"{_join(where, key)}[{i}]", f"expected a string, got {_describe(item)}"
                )
        return good


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} ({text})" if len(text) <= 40 else kind


def _suggest(key: str, allowed: set[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_DURATION_UNITS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w|y)?\s*$")
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^\s*([0-9]+)\s*([KMGT]?)B?\s*$", re.IGNORECASE)


def parse_duration_ms(value: Any) -> int:
    """Synapse durations: a bare integer is milliseconds; '30s', '5m', '1h', '1d', '1w', '1y'."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '1d' or milliseconds, got {_describe(value)}")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(float(match.group(1)) * _DURATION_UNITS[match.group(2) or "ms"])
    raise ValueError(f"expected a duration like '1d' or milliseconds, got {_describe(value)}")


def parse_size(value: Any) -> int:
    """Synapse sizes: a bare integer is bytes; '512K', '50M', '1G' use powers of 1024."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '50M' or bytes, got {_describe(value)}")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    raise ValueError(f"expected a size like '50M' or bytes, got {_describe(value)}")


def _parse_network(value: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise ValueError(f"expected an IP range like '10.0.0.0/8', got {_describe(value)}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or CIDR range: {value!r}") from None


def _parse_server_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a server name, got {_describe(value)}")
    try:
        split_server_name(value)
    except ValueError as exc:
        raise ValueError(f"invalid server name {value!r}: {exc}") from None
    return value


def _parse_base_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
        raise ValueError(
            f"expected an http(s) URL like 'https://example.com/', got {_describe(value)}"
        )
    return value if value.endswith("/") else value + "/"


def _parse_key_base64(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an unpadded base64 ed25519 key, got {_describe(value)}")
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except ValueError:
        raise ValueError(f"not valid base64: {value!r}") from None
    if len(raw) != 32:
        raise ValueError(f"an ed25519 key is 32 bytes, this one is {len(raw)}")
    return value.rstrip("=")


# --------------------------------------------------------------------------- sections


def _read_listeners(r: _Reader, raw: Any) -> tuple[ListenerConfig, ...]:
    if raw is None:
        return (ListenerConfig(port=8008),)
    if not isinstance(raw, list) or not raw:
        r.problem("listeners", f"expected a non-empty list, got {_describe(raw)}")
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
        if r.raw(m, "port") is _MISSING:
            r.problem(_join(where, "port"), "required (the TCP port to listen on)")
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
            r.problem(_join(where, "bind_addresses"), "must list at least one address")
        kind = r.str(m, "type", where, "http")
        if kind != "http":
            r.problem(_join(where, "type"), f"only 'http' listeners are supported, got {kind!r}")
        tls = r.bool(m, "tls", where, False)
        x_forwarded = r.bool(m, "x_forwarded", where, False)
        resources = _read_resources(r, m, where)
        result.append(
            ListenerConfig(
                port=port,
                bind_addresses=tuple(addresses),
                type="http",
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


def _read_resources(r: _Reader, m: Mapping[str, Any], where: str) -> frozenset[str]:
    items = r.list(m, "resources", where)
    if items is None:
        r.problem(_join(where, "resources"), "required, e.g. [{names: [client, federation]}]")
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
                    + _suggest(name, set(RESOURCE_NAMES)),
                )
    return frozenset(names)


def _read_database(r: _Reader, raw: Any) -> DatabaseConfig:
    default = DatabaseConfig(name="sqlite3", path=r.resolve("homeserver.db"))
    m = r.mapping(raw, "database")
    if m is None:
        return default
    r.check_keys(m, {"name", "args", "allow_unsafe_locale", "txn_limit"}, "database")
    name = r.str(m, "name", "database", "sqlite3")
    if name in ("psycopg2", "postgres", "postgresql", "psycopg"):
        r.problem("database.name", f"{name!r} (PostgreSQL) is not supported yet; use 'sqlite3'")
        return default
    if name != "sqlite3":
        r.problem("database.name", f"expected 'sqlite3', got {name!r}")
        return default
    args = r.mapping(m.get("args"), "database.args")
    if args is not None:
        r.check_keys(args, {"database", "cp_min", "cp_max"}, "database.args")
    path = r.path(args, "database", "database.args", default.path)
    return DatabaseConfig(name="sqlite3", path=path or default.path)


_ROLE = re.compile(r"^m\.role\.(admin|security)$|^(?!m\.)[a-z0-9_.-]+\.[a-z0-9_.-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _read_support(r: _Reader, raw: Any) -> SupportConfig | None:
    """The optional `support` section: admin contacts and/or a support page URL."""
    m = r.mapping(raw, "support")
    if m is None:
        return None
    r.check_keys(m, {"contacts", "support_page"}, "support")
    page = r.str(m, "support_page", "support")
    if page is not None and not re.match(r"^https?://\S+$", page):
        r.problem("support.support_page", f"expected an http(s) URL, got {_describe(page)}")
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
                _join(where, "role"),
                "required: m.role.admin, m.role.security or a namespaced role (com.example.x)",
            )
        matrix_id = r.str(cm, "matrix_id", where)
        if matrix_id is not None and not re.match(r"^@[^:\s]+:\S+$", matrix_id):
            r.problem(_join(where, "matrix_id"), f"expected a user ID, got {matrix_id!r}")
        email = r.str(cm, "email_address", where)
        if email is not None and not _EMAIL.match(email):
            r.problem(_join(where, "email_address"), f"expected an email address, got {email!r}")
        if matrix_id is None and email is None:
            r.problem(where, "needs a matrix_id or an email_address")
        elif role is not None:
            contacts.append(SupportContact(role, matrix_id, email))
    if not contacts and page is None:
        r.problem("support", "set support_page or at least one contact (or leave it out)")
        return None
    return SupportConfig(tuple(contacts), page)


def _read_old_keys(r: _Reader, raw: Any) -> Mapping[str, OldVerifyKey]:
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
        key = r.converted(em, "key", where, None, _parse_key_base64)
        expired = r.int(em, "expired_ts", where, -1, 0)
        if r.raw(em, "key") is _MISSING:
            r.problem(_join(where, "key"), "required")
        if r.raw(em, "expired_ts") is _MISSING:
            r.problem(_join(where, "expired_ts"), "required (ms since the epoch)")
        if key is not None and expired >= 0:
            result[key_id] = OldVerifyKey(key=key, expired_ts=expired)
    return MappingProxyType(result)


def _read_trusted_key_servers(r: _Reader, raw: Any) -> tuple[TrustedKeyServer, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problem("trusted_key_servers", f"expected a list, got {_describe(raw)}")
        return ()
    result = []
    for i, item in enumerate(raw):
        where = f"trusted_key_servers[{i}]"
        m = r.mapping(item, where)
        if m is None:
            continue
        r.check_keys(m, {"server_name", "verify_keys", "accept_keys_insecurely"}, where)
        name = r.converted(m, "server_name", where, None, _parse_server_name)
        if r.raw(m, "server_name") is _MISSING:
            r.problem(_join(where, "server_name"), "required")
        verify_keys = None
        vm = r.mapping(m.get("verify_keys"), _join(where, "verify_keys"))
        if vm is not None:
            verify_keys = {}
            for key_id in vm:
                key = r.converted(vm, key_id, _join(where, "verify_keys"), None, _parse_key_base64)
                if key is not None:
                    verify_keys[key_id] = key
            verify_keys = MappingProxyType(verify_keys)
        insecure = r.bool(m, "accept_keys_insecurely", where, False)
        if name is not None:
            result.append(TrustedKeyServer(name, verify_keys, insecure))
    return tuple(result)


def _read_rate_limit(
    r: _Reader, parent: Mapping[str, Any] | None, key: str, where: str, default: RateLimit
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
                _join(where, "per_second"), f"expected a number or null, got {_describe(value)}"
            )
        elif not math.isfinite(value) or value <= 0:
            r.problem(_join(where, "per_second"), "expected a positive number (null = unlimited)")
        else:
            per_second = float(value)
    burst = r.int(m, "burst_count", where, default.burst_count, 1)
    return RateLimit(per_second, burst)


# YAML key -> RateLimitConfig field, for the flat `rc_*: {per_second, burst_count}` keys.
_RC_FLAT = {
    "rc_message": "message",
    "rc_registration": "registration",
    "rc_registration_token_validity": "registration_token_validity",
    "rc_joins_per_room": "joins_per_room",
    "rc_admin_redaction": "admin_redaction",
    "rc_third_party_invite": "third_party_invite",
    "rc_media_create": "media_create",
}
# YAML key -> {sub key -> field} for the nested ones.
_RC_NESTED = {
    "rc_login": {
        "address": "login_address",
        "account": "login_account",
        "failed_attempts": "login_failed_attempts",
    },
    "rc_joins": {"local": "joins_local", "remote": "joins_remote"},
    "rc_invites": {
        "per_room": "invites_per_room",
        "per_user": "invites_per_user",
        "per_issuer": "invites_per_issuer",
    },
}


def _read_rate_limits(r: _Reader, top: Mapping[str, Any]) -> RateLimitConfig:
    defaults = RateLimitConfig()
    values: dict[str, Any] = {"enabled": r.bool(top, "rc_enabled", "", True)}
    for key, name in _RC_FLAT.items():
        values[name] = _read_rate_limit(r, top, key, key, getattr(defaults, name))
    for key, subs in _RC_NESTED.items():
        m = r.mapping(top.get(key), key)
        if m is not None:
            r.check_keys(m, set(subs), key)
        for sub, name in subs.items():
            values[name] = _read_rate_limit(r, m, sub, f"{key}.{sub}", getattr(defaults, name))
    return RateLimitConfig(**values)


def _read_federation(r: _Reader, top: Mapping[str, Any]) -> FederationConfig:
    def networks(key: str, default: tuple[str, ...]) -> tuple[IPNetwork, ...]:
        items = r.list(top, key, "")
        if items is None:
            items = list(default)
        result = []
        for i, item in enumerate(items):
            try:
                result.append(_parse_network(item))
            except ValueError as exc:
                r.problem(f"{key}[{i}]", str(exc))
        return tuple(result)

    domains = None
    names = r.list(top, "federation_domain_whitelist", "")
    if names is not None:
        domains = set()
        for i, item in enumerate(names):
            try:
                domains.add(_parse_server_name(item))
            except ValueError as exc:
                r.problem(f"federation_domain_whitelist[{i}]", str(exc))
    cas = tuple(r.resolve(p) for p in (r.str_list(top, "federation_custom_ca_list", "") or []))
    for i, ca in enumerate(cas):
        if not ca.is_file():
            r.problem(f"federation_custom_ca_list[{i}]", f"no such file: {ca}")
    return FederationConfig(
        verify_certificates=r.bool(top, "federation_verify_certificates", "", True),
        custom_ca_list=cas,
        ip_range_blacklist=networks("ip_range_blacklist", DEFAULT_IP_RANGE_BLACKLIST),
        ip_range_whitelist=networks("ip_range_whitelist", ()),
        domain_whitelist=frozenset(domains) if domains is not None else None,
        allow_public_rooms_over_federation=r.bool(
            top, "allow_public_rooms_over_federation", "", False
        ),
        plain_http_for_tests=r.bool(top, "federation_client_plain_http_for_tests", "", False),
    )


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parse_log_level(value: Any) -> str:
    if isinstance(value, str) and value.upper() in _LOG_LEVELS:
        return value.upper()
    raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}, got {_describe(value)}")


def _parse_room_version(value: Any) -> str:
    value = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(value, str) and value in KNOWN_ROOM_VERSIONS:
        return value
    raise ValueError(f"unknown room version {value!r}; known: {', '.join(KNOWN_ROOM_VERSIONS)}")


# Every top-level key we understand. generate_config() must mention each of them.
KNOWN_KEYS = frozenset(
    {
        "server_name",
        "public_baseurl",
        "listeners",
        "database",
        "signing_key_path",
        "old_signing_keys",
        "key_refresh_interval",
        "trusted_key_servers",
        "suppress_key_server_warning",
        "tls_certificate_path",
        "tls_private_key_path",
        "enable_registration",
        "enable_registration_without_verification",
        "registration_requires_token",
        "registration_shared_secret",
        "registration_shared_secret_path",
        "password_hashing",
        "macaroon_secret_key",
        "form_secret",
        "federation_custom_ca_list",
        "federation_verify_certificates",
        "ip_range_blacklist",
        "ip_range_whitelist",
        "federation_domain_whitelist",
        "allow_public_rooms_over_federation",
        "federation_client_plain_http_for_tests",
        "rc_enabled",
        *_RC_FLAT,
        *_RC_NESTED,
        "default_room_version",
        "media_store_path",
        "max_upload_size",
        "serve_server_wellknown",
        "well_known_client",
        "support",
        "max_request_body",
        "log_level",
    }
)


def parse_config(raw: Any, *, base_dir: Path, source: str = "<config>") -> Config:
    """Check a parsed YAML document and build the Config; raise ConfigError listing all problems.

    `base_dir` is where relative paths resolve (the config file's folder).
    """
    r = _Reader(source, Path(base_dir))
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{source}: the file must be a YAML mapping of settings"])
    top = r.mapping(raw, "") or {}
    unknown = [k for k in top if isinstance(k, str) and k not in KNOWN_KEYS | IGNORED_SYNAPSE_KEYS]
    for key in sorted(unknown):
        r.problem(key, "unknown setting" + _suggest(key, KNOWN_KEYS))

    if r.raw(top, "server_name") is _MISSING:
        r.problem("server_name", "required: the domain in your user IDs, e.g. 'example.com'")
    server_name = r.converted(top, "server_name", "", "invalid.invalid", _parse_server_name)

    listeners = _read_listeners(r, top.get("listeners"))
    tls = TlsConfig(
        certificate_path=r.path(top, "tls_certificate_path", "", None),
        private_key_path=r.path(top, "tls_private_key_path", "", None),
    )
    if any(listener.tls for listener in listeners):
        for key, path in (
            ("tls_certificate_path", tls.certificate_path),
            ("tls_private_key_path", tls.private_key_path),
        ):
            if path is None:
                r.problem(key, "required because a listener has tls: true")
            elif not path.is_file():
                r.problem(key, f"no such file: {path}")

    shared_secret = r.str(top, "registration_shared_secret", "")
    secret_path = r.path(top, "registration_shared_secret_path", "", None)
    if secret_path is not None:
        if shared_secret is not None:
            r.problem(
                "registration_shared_secret_path",
                "set only one of this and registration_shared_secret",
            )
        try:
            shared_secret = secret_path.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            r.problem(
                "registration_shared_secret_path", f"cannot read {secret_path}: {exc.strerror}"
            )
    registration = RegistrationConfig(
        enabled=r.bool(top, "enable_registration", "", False),
        without_verification=r.bool(top, "enable_registration_without_verification", "", False),
        requires_token=r.bool(top, "registration_requires_token", "", False),
        shared_secret=shared_secret,
    )
    if registration.enabled and not (
        registration.without_verification or registration.requires_token
    ):
        r.problem(
            "enable_registration",
            "open registration without any verification invites spam accounts; also set "
            "enable_registration_without_verification: true (or registration_requires_token: true)",
        )

    hashing_raw = r.mapping(top.get("password_hashing"), "password_hashing") or {}
    r.check_keys(hashing_raw, {"opslimit", "memlimit"}, "password_hashing")
    password_hashing = PasswordHashingConfig(
        opslimit=r.int(hashing_raw, "opslimit", "password_hashing", 5, 1, 2**32 - 1),
        memlimit=r.int(hashing_raw, "memlimit", "password_hashing", 7 * 1024**2, 8192, 2**40),
    )

    public_baseurl = r.converted(top, "public_baseurl", "", None, _parse_base_url)
    well_known_client = r.converted(top, "well_known_client", "", None, _parse_base_url)
    database = _read_database(r, top.get("database"))

    config = Config(
        server_name=server_name,
        public_baseurl=public_baseurl,
        listeners=listeners,
        database=database,
        keys=KeysConfig(
            signing_key_path=r.path(top, "signing_key_path", "", None)
            or r.resolve(f"{server_name}.signing.key"),
            old_signing_keys=_read_old_keys(r, top.get("old_signing_keys")),
            key_refresh_interval_ms=r.converted(
                top, "key_refresh_interval", "", 86_400_000, parse_duration_ms
            ),
            trusted_key_servers=_read_trusted_key_servers(r, top.get("trusted_key_servers")),
            suppress_key_server_warning=r.bool(top, "suppress_key_server_warning", "", False),
        ),
        tls=tls,
        registration=registration,
        password_hashing=password_hashing,
        federation=_read_federation(r, top),
        ratelimit=_read_rate_limits(r, top),
        media=MediaConfig(
            store_path=r.path(top, "media_store_path", "", None) or r.resolve("media_store"),
            max_upload_size=r.converted(top, "max_upload_size", "", 50 * 1024**2, parse_size),
        ),
        well_known=WellKnownConfig(
            serve_server_wellknown=r.bool(top, "serve_server_wellknown", "", False),
            client_base_url=well_known_client or public_baseurl,
            support=_read_support(r, top.get("support")),
        ),
        secrets=SecretsConfig(
            macaroon_secret_key=r.str(top, "macaroon_secret_key", ""),
            form_secret=r.str(top, "form_secret", ""),
        ),
        default_room_version=r.converted(
            top, "default_room_version", "", "12", _parse_room_version
        ),
        max_request_body=r.converted(top, "max_request_body", "", 10 * 1024**2, parse_size),
        log_level=r.converted(top, "log_level", "", "INFO", _parse_log_level),
        ignored_keys=tuple(sorted(k for k in top if k in IGNORED_SYNAPSE_KEYS)),
    )
    if config.keys.key_refresh_interval_ms < 60_000 and "key_refresh_interval" in top:
        r.problem("key_refresh_interval", "must be at least one minute")
    if r.problems:
        raise ConfigError(r.problems)
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check a YAML config file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}:{where}: not valid YAML: {reason}"]) from None
    config = parse_config(raw, base_dir=path.resolve().parent, source=str(path))
    return replace(config, config_path=path.resolve())


# --------------------------------------------------------------------------- secrets

_SECRET_NAMES = ("registration_shared_secret", "macaroon_secret_key", "form_secret")


def ensure_secrets(config: Config) -> Config:
    """Fill unset secrets from `config.secrets_path`, creating that file once if absent.

    The file is written exclusively (never overwritten) with mode 0600; values set in the
    config file win over it. A broken secrets file is a ConfigError, not a silent reset,
    because regenerating would log everyone out and invalidate issued tokens.
    """
    path = config.secrets_path
    if path.exists():
        try:
            stored = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError([f"{path}: cannot read the secrets file: {exc}"]) from None
        if not isinstance(stored, Mapping):
            raise ConfigError([f"{path}: the secrets file must be a YAML mapping"])
        missing = [n for n in _SECRET_NAMES if not isinstance(stored.get(n), str) or not stored[n]]
        if missing:
            raise ConfigError(
                [f"{path}: missing or empty {', '.join(missing)}; add them or move the file away"]
            )
    else:
        stored = {name: _secrets.token_urlsafe(32) for name in _SECRET_NAMES}
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "# Generated on first start. Keep private; do not edit while running.\n"
        text += yaml.safe_dump(dict(stored), default_flow_style=False)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        logging.getLogger(__name__).info("Generated secrets in %s", path)
    return replace(
        config,
        registration=replace(
            config.registration,
            shared_secret=config.registration.shared_secret or stored["registration_shared_secret"],
        ),
        secrets=SecretsConfig(
            macaroon_secret_key=config.secrets.macaroon_secret_key or stored["macaroon_secret_key"],
            form_secret=config.secrets.form_secret or stored["form_secret"],
        ),
    )


def read_stored_shared_secret(config: Config) -> str | None:
    """The registration shared secret without creating anything (for `register-user -c`)."""
    if config.registration.shared_secret:
        return config.registration.shared_secret
    try:
        stored = yaml.safe_load(config.secrets_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    value = stored.get("registration_shared_secret") if isinstance(stored, Mapping) else None
    return value if isinstance(value, str) and value else None
