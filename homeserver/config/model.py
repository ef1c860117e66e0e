"""The configuration's shape: one frozen dataclass per section, plus the defaults.

Everything here is plain data with a few derived properties; reading and checking YAML
lives in `reader`, `values`, `sections` and `parse`, so the model can be imported (by
services that receive a Config) without pulling in the parser.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from homeserver.config.accounts_model import (
    AutoJoinConfig,
    CaptchaConfig,
    ConsentConfig,
    PasswordConfig,
    SsoConfig,
    ThreepidConfig,
    TurnConfig,
)
from homeserver.config.auto_accept import AutoAcceptInvitesConfig
from homeserver.config.directory import DirectoryPolicy
from homeserver.config.jwt_login import JwtLoginConfig
from homeserver.config.resource_limits import ResourceLimitsConfig
from homeserver.config.retention import RetentionSettings
from homeserver.config.room_complexity import LimitRemoteRoomsConfig
from homeserver.config.workers import WorkersConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOURCE_NAMES = ("client", "federation", "keys", "media", "metrics", "openid", "replication")

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


class ConfigError(Exception):
    """Every problem found in a configuration, one readable line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# --------------------------------------------------------------------------- sections


# The cyclic garbage collector's thresholds (gc.set_threshold). Python's (700, 10, 10)
# suit short scripts; a server with thousands of requests in flight keeps each one's
# objects alive across a collection, so most of them were promoted and rescanned: with
# 2,000 long-polls in one room, 16% of the CPU and pauses of 0.2 s. A first generation
# of 50,000 lets them die young (bench notes: CPU per fan-out message -22%, p99 -8%).
DEFAULT_GC_THRESHOLDS = (50_000, 20, 20)


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
    """Where the data lives; `name` keeps Synapse's spelling ("sqlite3" or "psycopg2").

    For SQLite `path` is the file. For PostgreSQL `connect` holds the connection args
    (user, password, database, host, port, cp_min, cp_max) and `path` is only the
    default database file's location, next to which generated secrets are kept.
    """

    name: str
    path: Path
    connect: tuple[tuple[str, Any], ...] = ()

    @property
    def is_postgres(self) -> bool:
        return self.name == "psycopg2"

    @property
    def args(self) -> Mapping[str, Any]:
        """Synapse's `args` shape, which homeserver.storage.open_database reads."""
        if self.is_postgres:
            return MappingProxyType(dict(self.connect))
        return MappingProxyType({"database": str(self.path)})

    def describe(self) -> str:
        """Where the data is, for logs (never the password)."""
        if not self.is_postgres:
            return str(self.path)
        a = dict(self.connect)
        where = f"{a.get('host', 'localhost')}:{a.get('port', 5432)}"
        return f"PostgreSQL {a.get('user', '')}@{where}/{a.get('database', '')}"


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
    # `registration_shared_secret: null` written out: no secret is generated on first
    # start either, so the admin register API stays off (an operator's hardening).
    shared_secret_disabled: bool = False
    # `POST /register?kind=guest` (Synapse's key, off by default as there): accounts
    # with no password that may only read and talk in rooms with guest_access can_join.
    allow_guest_access: bool = False
    # With an `email` section: registering with a validated address is a flow, and with
    # `registrations_require_3pid: [email]` the only one.
    offers_email: bool = False
    requires_email: bool = False
    captcha: CaptchaConfig | None = None
    consent: ConsentConfig | None = None
    # Synapse's: `_`-prefixed names are for bridges unless allowed; with
    # inhibit_user_in_use_error a taken name is revealed only when registration ends.
    allow_underscore_prefix: bool = False
    inhibit_user_in_use_error: bool = False
    # Synapse's user_types: the type new accounts get, and types beyond bot and
    # support the admin API may set.
    default_user_type: str | None = None
    extra_user_types: tuple[str, ...] = ()


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
    # What other servers may learn of our users (Synapse's keys and defaults): device
    # names ("Alice's work laptop") stay private unless the operator shares them;
    # profiles are answered unless the operator says no.
    allow_device_name_lookup_over_federation: bool = False
    allow_profile_lookup_over_federation: bool = True
    # federation_client_minimum_tls_version ("1".."1.3"; None: the system's default) and
    # federation_certificate_verification_whitelist (server name globs).
    client_minimum_tls_version: str | None = None
    certificate_verification_whitelist: tuple[str, ...] = ()
    # Outbound federation over plain http:// instead of https:// (loopback test
    # federations only; never in production: requests would be unencrypted).
    plain_http_for_tests: bool = False
    # Backoff towards a destination that stopped answering (Synapse's `federation:`
    # section): the first retry after `min`, each next one `multiplier` times later, at
    # most `max` apart; `request_timeout_ms` bounds each transaction request.
    destination_min_retry_interval_ms: int = 10_000
    destination_max_retry_interval_ms: int = 3_600_000
    destination_retry_multiplier: float = 2.0
    request_timeout_ms: int = 60_000

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
class FederationRateLimit:
    """Synapse's rc_federation, per origin server (federation/server/origin_limits.py)."""

    window_size_ms: int = 1000
    sleep_limit: int = 10
    sleep_delay_ms: int = 500
    reject_limit: int = 50
    concurrent: int = 3


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
    delayed_event_mgmt: RateLimit = RateLimit(1.0, 5)
    # Synapse's: rooms a user creates (each is a dozen events and a state to keep) and
    # presence changes (each goes to every server the user shares a room with).
    room_creation: RateLimit = RateLimit(0.016, 10)
    presence: RateLimit = RateLimit(0.1, 1)
    # Content reports a user files (each a row admins read): ours, six a minute.
    reports: RateLimit = RateLimit(0.1, 5)
    federation: FederationRateLimit = FederationRateLimit()  # inbound, per origin
    # Bytes of other servers' media a client address makes us download (Synapse's
    # remote_media_download_per_second / _burst_count: 87K a second, 500M at once).
    remote_media_download: RateLimit = RateLimit(87 * 1024, 500 * 1024 * 1024)
    # Mail sent by requestToken, per client address and per email address.
    threepid_validation: RateLimit = RateLimit(0.003, 5)
    # Single sign-ons started per client address (each is a row kept ten minutes);
    # generous, as a whole office signs in from one address (not rc_login's 0.003/s).
    sso_redirect: RateLimit = RateLimit(1.0, 30)

    def get(self, name: str) -> RateLimit:
        """The effective limit for `name` (a field name): unlimited when switched off."""
        if name == "registration_sessions":
            return self.registration_sessions()
        limit = getattr(self, name)
        return limit if self.enabled else UNLIMITED

    def registration_sessions(self) -> RateLimit:
        """New UIA sessions an anonymous IP may open on /register: ten per registration
        `rc_registration` allows, so an honest client never notices, while a flood of
        bare POSTs cannot add rows faster than that (each session is a database row
        kept for its lifetime)."""
        base = self.registration
        if not self.enabled or base.per_second is None:
            return UNLIMITED
        return RateLimit(base.per_second * 10, base.burst_count * 10)


@dataclass(frozen=True)
class ThumbnailSize:
    width: int
    height: int
    method: str  # "crop" or "scale"


# Synapse's default thumbnail_sizes.
DEFAULT_THUMBNAIL_SIZES: tuple[ThumbnailSize, ...] = (
    ThumbnailSize(32, 32, "crop"),
    ThumbnailSize(96, 96, "crop"),
    ThumbnailSize(320, 240, "scale"),
    ThumbnailSize(640, 480, "scale"),
    ThumbnailSize(800, 600, "scale"),
)


@dataclass(frozen=True)
class MediaConfig:
    """The content repository (Synapse's keys of the same names)."""

    store_path: Path
    enable_media_repo: bool = True
    max_upload_size: int = 50 * 1024 * 1024
    max_image_pixels: int = 32 * 1024 * 1024
    dynamic_thumbnails: bool = False
    thumbnail_sizes: tuple[ThumbnailSize, ...] = DEFAULT_THUMBNAIL_SIZES
    # Media uploaded while true is served only by the authenticated (v1.11) endpoints.
    enable_authenticated_media: bool = True
    max_pending_media_uploads: int = 5
    unused_expiration_time_ms: int = 24 * 3600 * 1000
    # media_retention: delete media not accessed for this long (None: keep forever).
    local_media_lifetime_ms: int | None = None
    remote_media_lifetime_ms: int | None = None
    url_preview_enabled: bool = False
    url_preview_ip_range_blacklist: tuple[IPNetwork, ...] = ()
    url_preview_ip_range_whitelist: tuple[IPNetwork, ...] = ()
    # Each entry maps URL components (scheme, netloc, path...) to a glob, or to a
    # regular expression when it starts with '^'; a URL matching every component of
    # one entry is refused.
    url_preview_url_blacklist: tuple[tuple[tuple[str, str], ...], ...] = ()
    max_spider_size: int = 10 * 1024 * 1024
    # media_upload_limits: (time period ms, bytes) a user may upload in that period.
    upload_limits: tuple[tuple[int, int], ...] = ()
    # prevent_media_downloads_from: servers whose media is never fetched (what we
    # already hold of it is still served).
    prevent_downloads_from: frozenset[str] = frozenset()
    # url_preview_accept_language: the languages previews ask pages for (Synapse's
    # list, sent as one Accept-Language header).
    url_preview_accept_language: str = "en"


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
    # Synapse's extra_well_known_client_content: more keys for the client document
    # (e.g. Element Call's org.matrix.msc4143.rtc_foci); never replaces ours.
    extra_client_content: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # Synapse's matrix_rtc.transports: the MatrixRTC backends (LiveKit SFUs) clients are
    # told of by GET /unstable/org.matrix.msc4143/rtc/transports (MSC4143).
    rtc_transports: tuple[Mapping[str, Any], ...] = ()
    # Synapse's default_identity_server: the identity server clients are told of
    # (m.identity_server in the client document).
    identity_server: str | None = None


@dataclass(frozen=True)
class ServerNoticesConfig:
    """Synapse's `server_notices` section: who sends notices and how their room looks."""

    system_mxid_localpart: str
    system_mxid_display_name: str | None = None
    system_mxid_avatar_url: str | None = None
    room_name: str = "Server Notices"
    room_avatar_url: str | None = None
    room_topic: str | None = None
    auto_join: bool = False


@dataclass(frozen=True)
class SecretsConfig:
    macaroon_secret_key: str | None = None
    form_secret: str | None = None


@dataclass(frozen=True)
class ProfileSettings:
    """Synapse's max_avatar_size, allowed_avatar_mimetypes, allow_per_room_profiles and
    include_profile_data_on_invite (homeserver/profiles/policy.py says what each does)."""

    max_avatar_size: int | None = None
    avatar_mimetypes: tuple[str, ...] = ()
    per_room: bool = True
    include_on_invite: bool = True


@dataclass(frozen=True)
class TokenLifetimes:
    """Synapse's session_lifetime, refreshable_access_token_lifetime,
    refresh_token_lifetime and nonrefreshable_access_token_lifetime (ms; None: never)."""

    session_ms: int | None = None
    refreshable_access_ms: int = 5 * 60 * 1000
    refresh_ms: int | None = None
    nonrefreshable_access_ms: int | None = None


@dataclass(frozen=True)
class CacheSettings:
    """Synapse's caches.global_factor and per_cache_factors (by cache name, ours
    named as Synapse's where they hold the same thing: getEvent, get_users_in_room...)
    and event_cache_size (the event caches' entries)."""

    global_factor: float = 1.0
    per_cache_factors: Mapping[str, float] = field(default_factory=dict)
    event_cache_size: int | None = None

    def size_for(self, name: str | None, default: int) -> int:
        if name == "getEvent" and self.event_cache_size is not None:
            default = self.event_cache_size
        factor = self.per_cache_factors.get(name or "", self.global_factor)
        return max(1, int(default * factor))


@dataclass(frozen=True)
class PushSettings:
    """Synapse's `push:` section (homeserver/config/push.py says what each does)."""

    enabled: bool = True
    include_content: bool = True
    group_unread_count_by_room: bool = True
    jitter_delay_ms: int = 0


@dataclass(frozen=True)
class Config:
    server_name: str
    listeners: tuple[ListenerConfig, ...]
    database: DatabaseConfig
    keys: KeysConfig
    media: MediaConfig
    threepids: ThreepidConfig = ThreepidConfig()
    sso: SsoConfig = SsoConfig()
    turn: TurnConfig = TurnConfig()
    push: PushSettings = PushSettings()
    profiles: ProfileSettings = ProfileSettings()
    token_lifetimes: TokenLifetimes = TokenLifetimes()
    caches: CacheSettings = CacheSettings()
    # Synapse's enable_search: false answers /search 400 and indexes nothing.
    enable_search: bool = True
    # Synapse's web_client_location: where the server's root sends a browser.
    web_client_location: str | None = None
    # Synapse's room_prejoin_state: (type, state key; None: every key) shown to invitees
    # and knockers; None: the default set (config/prejoin.py).
    prejoin_state: tuple[tuple[str, str | None], ...] | None = None
    # Synapse's delete_stale_devices_after: devices unused this long are signed out.
    delete_stale_devices_after_ms: int | None = None
    # Synapse's forget_rooms_on_leave: a room left (or kicked, banned from) is forgotten.
    forget_rooms_on_leave: bool = False
    jwt_login: JwtLoginConfig | None = None  # Synapse's jwt_config (config/jwt_login.py)
    # Synapse's forgotten_room_retention_period: a room all local users forgot is
    # purged this long after (None: kept).
    forgotten_room_retention_ms: int | None = None
    presence_mode: str = "on"  # homeserver/config/presence.py
    # Synapse's ui_auth.session_timeout: deleting devices needs no new UIA within this
    # long of the access token's last one (0: always asks).
    ui_auth_session_timeout_ms: int = 0
    # Synapse's redaction_retention_period: what a redacted event said is erased from
    # the database this long after the redaction (None: kept, for moderators, forever).
    redaction_retention_ms: int | None = 7 * 24 * 3600 * 1000
    # Synapse's exclude_rooms_from_sync: rooms no /sync or sliding sync lists.
    exclude_rooms_from_sync: frozenset[str] = frozenset()
    directory: DirectoryPolicy = DirectoryPolicy()  # config/directory.py
    retention: RetentionSettings = RetentionSettings()  # config/retention.py (MSC1763)
    auto_join: AutoJoinConfig = AutoJoinConfig()
    passwords: PasswordConfig = PasswordConfig()
    # Synapse's encryption_enabled_by_default_for_room_type: new rooms start with
    # m.room.encryption ("all"; "invite": the private presets; "off").
    encryption_by_default: str = "off"
    # Synapse's enable_set_displayname / enable_set_avatar_url: users may change them
    # (off where an identity provider or a directory owns profiles).
    set_displayname: bool = True
    set_avatar_url: bool = True
    # Synapse's block_non_admin_invites and default_power_level_content_override
    # (per preset: merged into new rooms' power levels, under the request's own).
    block_non_admin_invites: bool = False
    default_power_levels: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, compare=False
    )
    # Synapse's user_directory: `enabled` (off: searches find no one) and
    # `search_all_users` (every local user is findable, not only those sharing a room).
    # Synapse's require_auth_for_profile_requests and
    # limit_profile_requests_to_users_who_share_rooms: who may read a profile.
    profiles_need_auth: bool = False
    profiles_need_shared_room: bool = False
    user_directory_enabled: bool = True
    search_all_users: bool = False
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
    # A Python logging dictConfig YAML file (Synapse's log_config); wins over log_level.
    log_config: Path | None = None
    # Serve Prometheus metrics on listeners with the `metrics` resource.
    enable_metrics: bool = False
    # gc.set_threshold's arguments (Synapse's gc_thresholds).
    gc_thresholds: tuple[int, ...] = DEFAULT_GC_THRESHOLDS
    # Synapse's key: /publicRooms answers clients without an access token.
    allow_public_rooms_without_auth: bool = False
    # Longest delay a delayed event (MSC4140) may ask for; None (0 in the file): off.
    max_event_delay_ms: int | None = 86_400_000
    server_notices: ServerNoticesConfig | None = None
    # app_service_config_files, parsed (homeserver.config.appservices.AppServiceConfig).
    app_services: tuple[Any, ...] = ()
    # Which process of a deployment this is, where the others are, the Redis bus.
    workers: WorkersConfig = WorkersConfig()
    limit_remote_rooms: LimitRemoteRoomsConfig = LimitRemoteRoomsConfig()  # room_complexity.py
    resource_limits: ResourceLimitsConfig = ResourceLimitsConfig()  # resource_limits.py
    auto_accept_invites: AutoAcceptInvitesConfig = AutoAcceptInvitesConfig()  # auto_accept.py
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
