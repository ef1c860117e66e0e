"""From YAML to a checked `Config`: the top-level keys, cross-key rules and file loading."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from homeserver.config.appservices import read_appservices
from homeserver.config.auto_accept import AUTO_ACCEPT_KEYS, read_auto_accept_invites
from homeserver.config.auto_join import AUTO_JOIN_KEYS, read_auto_join
from homeserver.config.caches import read_caches
from homeserver.config.directory import DIRECTORY_KEYS, read_directory_policy
from homeserver.config.email import EMAIL_KEYS, read_threepids, registration_requires_email
from homeserver.config.jwt_login import read_jwt_login
from homeserver.config.media import MEDIA_KEYS, read_media
from homeserver.config.model import (
    DEFAULT_GC_THRESHOLDS,
    Config,
    ConfigError,
    KeysConfig,
    PasswordHashingConfig,
    ProfileSettings,
    RegistrationConfig,
    SecretsConfig,
    TlsConfig,
    TokenLifetimes,
    WellKnownConfig,
)
from homeserver.config.oidc import SSO_KEYS, read_sso
from homeserver.config.prejoin import read_prejoin_state
from homeserver.config.presence import read_presence_mode
from homeserver.config.push import read_push
from homeserver.config.reader import MISSING, Reader, suggest
from homeserver.config.registration_checks import (
    CAPTCHA_KEYS,
    CONSENT_KEYS,
    PASSWORD_KEYS,
    read_captcha,
    read_consent,
    read_password_config,
    read_secret,
)
from homeserver.config.resource_limits import RESOURCE_LIMITS_KEYS, read_resource_limits
from homeserver.config.retention import read_retention
from homeserver.config.room_complexity import LIMIT_REMOTE_ROOMS_KEYS, read_limit_remote_rooms
from homeserver.config.sections import (
    RC_FLAT,
    RC_NESTED,
    read_database,
    read_federation,
    read_json_mapping,
    read_listeners,
    read_old_keys,
    read_rate_limits,
    read_rtc_transports,
    read_server_notices,
    read_support,
    read_trusted_key_servers,
)
from homeserver.config.synapse_keys import SYNAPSE_TOP_LEVEL_KEYS
from homeserver.config.values import (
    parse_base_url,
    parse_duration_ms,
    parse_gc_thresholds,
    parse_log_level,
    parse_room_version,
    parse_server_name,
    parse_size,
)
from homeserver.config.voip import TURN_KEYS, read_turn
from homeserver.config.workers import EDU_STREAMS, WORKER_KEYS, read_workers

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
        "allow_guest_access",
        "registration_requires_token",
        "registration_shared_secret",
        "registration_shared_secret_path",
        "password_hashing",
        "macaroon_secret_key",
        "macaroon_secret_key_path",
        "form_secret",
        "form_secret_path",
        "federation_custom_ca_list",
        "federation_verify_certificates",
        "ip_range_blacklist",
        "ip_range_whitelist",
        "federation_domain_whitelist",
        "allow_public_rooms_over_federation",
        "allow_device_name_lookup_over_federation",
        "allow_profile_lookup_over_federation",
        "federation_client_minimum_tls_version",
        "federation_certificate_verification_whitelist",
        "allow_public_rooms_without_auth",
        "federation_client_plain_http_for_tests",
        "federation",
        "rc_enabled",
        "rc_federation",
        "remote_media_download_per_second",
        "remote_media_download_burst_count",
        *RC_FLAT,
        *RC_NESTED,
        "default_room_version",
        *MEDIA_KEYS,
        *EMAIL_KEYS,
        *CAPTCHA_KEYS,
        *CONSENT_KEYS,
        *PASSWORD_KEYS,
        *SSO_KEYS,
        *TURN_KEYS,
        "push",
        "presence",
        "ui_auth",
        "redaction_retention_period",
        "exclude_rooms_from_sync",
        *DIRECTORY_KEYS,
        "max_avatar_size",
        "allowed_avatar_mimetypes",
        "allow_per_room_profiles",
        "include_profile_data_on_invite",
        "delete_stale_devices_after",
        "forget_rooms_on_leave",
        "forgotten_room_retention_period",
        "jwt_config",
        "session_lifetime",
        "caches",
        "event_cache_size",
        "enable_search",
        "web_client_location",
        "room_prejoin_state",
        "allow_underscore_prefixed_registration",
        "inhibit_user_in_use_error",
        "default_identity_server",
        "user_types",
        "refreshable_access_token_lifetime",
        "refresh_token_lifetime",
        "nonrefreshable_access_token_lifetime",
        "retention",
        *AUTO_JOIN_KEYS,
        "app_service_config_files",
        "serve_server_wellknown",
        "well_known_client",
        "support",
        "extra_well_known_client_content",
        "matrix_rtc",
        "max_request_body",
        "log_level",
        "log_config",
        "enable_metrics",
        "gc_thresholds",
        "server_notices",
        "max_event_delay_duration",
        "encryption_enabled_by_default_for_room_type",
        "enable_set_displayname",
        "enable_set_avatar_url",
        "user_directory",
        "require_auth_for_profile_requests",
        "block_non_admin_invites",
        "default_power_level_content_override",
        "limit_profile_requests_to_users_who_share_rooms",
        *WORKER_KEYS,
        *LIMIT_REMOTE_ROOMS_KEYS,
        *RESOURCE_LIMITS_KEYS,
        *AUTO_ACCEPT_KEYS,
    }
)


def _default_power_levels(r: Reader, top: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """default_power_level_content_override: {preset: power levels content}."""
    raw = r.mapping(top.get("default_power_level_content_override"), "") or {}
    out: dict[str, dict[str, Any]] = {}
    for preset, content in raw.items():
        where = f"default_power_level_content_override.{preset}"
        if preset not in ("private_chat", "trusted_private_chat", "public_chat"):
            r.problem(where, "expected a preset: private_chat, trusted_private_chat, public_chat")
            continue
        m = r.mapping(content, where)
        if m is None:
            continue
        for key, value in m.items():
            ok = isinstance(value, int) and not isinstance(value, bool)
            if isinstance(value, dict):
                ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
            if not ok:
                r.problem(f"{where}.{key}", "expected a power level or a map of them")
        out[preset] = dict(m)
    return out


def _encryption_default(value: Any) -> str:
    if value is False:  # YAML reads an unquoted off as false
        return "off"
    if value not in ("all", "invite", "off"):
        raise ValueError("expected all, invite or off")
    return str(value)


def _duration_or_off(value: Any) -> int | None:
    """A duration; 0 means switched off (None)."""
    return parse_duration_ms(value) or None


# Our bound on ui_auth.session_timeout: longer would let a stolen access token delete
# the owner's other devices long after the owner last typed a password.
MAX_UI_AUTH_SESSION_TIMEOUT_MS = 3_600_000


def _ui_auth_timeout(r: Reader, top: Mapping[str, Any]) -> int:
    section = r.mapping(top.get("ui_auth"), "ui_auth")
    if section is None:
        return 0
    r.check_keys(section, {"session_timeout"}, "ui_auth")
    timeout = r.converted(section, "session_timeout", "ui_auth", 0, parse_duration_ms) or 0
    if timeout > MAX_UI_AUTH_SESSION_TIMEOUT_MS:
        r.problem("ui_auth.session_timeout", "at most 1h")
        return 0
    return int(timeout)


def _redaction_retention(r: Reader, top: Mapping[str, Any]) -> int | None:
    """7 days unless set; an explicit null keeps redacted content forever (Synapse)."""
    if "redaction_retention_period" in top and top["redaction_retention_period"] is None:
        return None
    return int(
        r.converted(top, "redaction_retention_period", "", 7 * 24 * 3600 * 1000, parse_duration_ms)
    )


def _room_ids(r: Reader, top: Mapping[str, Any], key: str) -> frozenset[str]:
    ids = r.str_list(top, key, "") or []
    for room_id in ids:
        if not room_id.startswith("!") or len(room_id) < 2:  # v12 IDs have no server
            r.problem(key, f"expected room IDs (!...), got {room_id!r}")
    return frozenset(ids)


def _web_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ValueError("expected an http(s) URL, e.g. https://app.element.io/")
    if any(c in value for c in "\r\n"):
        raise ValueError("a URL cannot span lines")
    return value


def read_user_types(r: Reader, top: Mapping[str, Any]) -> dict[str, Any]:
    """Synapse's user_types: {default_user_type, extra_user_types}."""
    section = r.mapping(top.get("user_types"), "user_types")
    if section is None:
        return {}
    r.check_keys(section, {"default_user_type", "extra_user_types"}, "user_types")
    extra = tuple(r.str_list(section, "extra_user_types", "user_types") or ())
    default = r.str(section, "default_user_type", "user_types")
    if default is not None and default not in ("bot", "support", *extra):
        r.problem(
            "user_types.default_user_type", "must be bot, support or an extra_user_types entry"
        )
    return {"default_user_type": default, "extra_user_types": extra}


def parse_config(raw: Any, *, base_dir: Path, source: str = "<config>") -> Config:
    """Check a parsed YAML document and build the Config; raise ConfigError listing all problems.

    `base_dir` is where relative paths resolve (the config file's folder).
    """
    r = Reader(source, Path(base_dir))
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{source}: the file must be a YAML mapping of settings"])
    top = r.mapping(raw, "") or {}
    unknown = [
        k for k in top if isinstance(k, str) and k not in KNOWN_KEYS | SYNAPSE_TOP_LEVEL_KEYS
    ]
    for key in sorted(unknown):
        r.problem(key, "unknown setting" + suggest(key, KNOWN_KEYS))

    if r.raw(top, "server_name") is MISSING:
        r.problem("server_name", "required: the domain in your user IDs, e.g. 'example.com'")
    server_name = r.converted(top, "server_name", "", "invalid.invalid", parse_server_name)

    # A worker's own listeners come from its file's worker_listeners (Synapse's key).
    worker_listeners = r.raw(top, "worker_listeners")
    if worker_listeners is not MISSING and r.raw(top, "worker_app") is MISSING:
        r.problem("worker_listeners", "only for workers (with worker_app); use listeners")
    listeners = read_listeners(
        r, worker_listeners if worker_listeners is not MISSING else top.get("listeners")
    )
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
    threepids = read_threepids(r, top)
    directory = r.mapping(top.get("user_directory"), "user_directory") or {}
    r.check_keys(directory, {"enabled", "search_all_users"}, "user_directory")
    registration = RegistrationConfig(
        enabled=r.bool(top, "enable_registration", "", False),
        without_verification=r.bool(top, "enable_registration_without_verification", "", False),
        requires_token=r.bool(top, "registration_requires_token", "", False),
        shared_secret=shared_secret,
        shared_secret_disabled=(
            "registration_shared_secret" in top and not shared_secret and secret_path is None
        ),
        allow_guest_access=r.bool(top, "allow_guest_access", "", False),
        offers_email=threepids.email is not None,
        requires_email=registration_requires_email(r, top),
        captcha=read_captcha(r, top),
        consent=read_consent(r, top),
        allow_underscore_prefix=r.bool(top, "allow_underscore_prefixed_registration", "", False),
        inhibit_user_in_use_error=r.bool(top, "inhibit_user_in_use_error", "", False),
        **read_user_types(r, top),
    )
    if registration.enabled and not (
        registration.without_verification
        or registration.requires_token
        or registration.requires_email
        or registration.captcha is not None
    ):
        r.problem(
            "enable_registration",
            "open registration without any verification invites spam accounts; also set "
            "enable_registration_without_verification: true (or registration_requires_token: "
            "true, or registrations_require_3pid: [email], or enable_registration_captcha: true)",
        )

    hashing_raw = r.mapping(top.get("password_hashing"), "password_hashing") or {}
    r.check_keys(hashing_raw, {"opslimit", "memlimit"}, "password_hashing")
    password_hashing = PasswordHashingConfig(
        opslimit=r.int(hashing_raw, "opslimit", "password_hashing", 5, 1, 2**32 - 1),
        memlimit=r.int(hashing_raw, "memlimit", "password_hashing", 7 * 1024**2, 8192, 2**40),
    )

    public_baseurl = r.converted(top, "public_baseurl", "", None, parse_base_url)
    well_known_client = r.converted(top, "well_known_client", "", None, parse_base_url)
    database = read_database(r, top.get("database"))

    caches, ignored_cache_keys = read_caches(r, top)
    config = Config(
        server_name=server_name,
        public_baseurl=public_baseurl,
        listeners=listeners,
        database=database,
        keys=KeysConfig(
            signing_key_path=r.path(top, "signing_key_path", "", None)
            or r.resolve(f"{server_name}.signing.key"),
            old_signing_keys=read_old_keys(r, top.get("old_signing_keys")),
            key_refresh_interval_ms=r.converted(
                top, "key_refresh_interval", "", 86_400_000, parse_duration_ms
            ),
            trusted_key_servers=read_trusted_key_servers(r, top.get("trusted_key_servers")),
            suppress_key_server_warning=r.bool(top, "suppress_key_server_warning", "", False),
        ),
        tls=tls,
        registration=registration,
        password_hashing=password_hashing,
        federation=read_federation(r, top),
        ratelimit=read_rate_limits(r, top),
        media=read_media(r, top),
        threepids=threepids,
        sso=read_sso(r, top),
        turn=read_turn(r, top),
        push=read_push(r, top),
        presence_mode=read_presence_mode(r, top),
        ui_auth_session_timeout_ms=_ui_auth_timeout(r, top),
        redaction_retention_ms=_redaction_retention(r, top),
        exclude_rooms_from_sync=_room_ids(r, top, "exclude_rooms_from_sync"),
        directory=read_directory_policy(r, top),
        forget_rooms_on_leave=r.bool(top, "forget_rooms_on_leave", "", False),
        jwt_login=read_jwt_login(r, top),
        forgotten_room_retention_ms=r.converted(
            top, "forgotten_room_retention_period", "", None, _duration_or_off
        ),
        token_lifetimes=TokenLifetimes(
            session_ms=r.converted(top, "session_lifetime", "", None, _duration_or_off),
            refreshable_access_ms=r.converted(
                top, "refreshable_access_token_lifetime", "", 300_000, _duration_or_off
            )
            or 300_000,
            refresh_ms=r.converted(top, "refresh_token_lifetime", "", None, _duration_or_off),
            nonrefreshable_access_ms=r.converted(
                top, "nonrefreshable_access_token_lifetime", "", None, _duration_or_off
            ),
        ),
        delete_stale_devices_after_ms=r.converted(
            top, "delete_stale_devices_after", "", None, _duration_or_off
        ),
        profiles=ProfileSettings(
            max_avatar_size=r.converted(top, "max_avatar_size", "", None, parse_size),
            avatar_mimetypes=tuple(r.str_list(top, "allowed_avatar_mimetypes", "") or ()),
            per_room=r.bool(top, "allow_per_room_profiles", "", True),
            include_on_invite=r.bool(top, "include_profile_data_on_invite", "", True),
        ),
        retention=read_retention(r, top),
        auto_join=read_auto_join(r, top),
        passwords=read_password_config(r, top),
        encryption_by_default=r.converted(
            top, "encryption_enabled_by_default_for_room_type", "", "off", _encryption_default
        ),
        set_displayname=r.bool(top, "enable_set_displayname", "", True),
        set_avatar_url=r.bool(top, "enable_set_avatar_url", "", True),
        block_non_admin_invites=r.bool(top, "block_non_admin_invites", "", False),
        default_power_levels=_default_power_levels(r, top),
        profiles_need_auth=r.bool(top, "require_auth_for_profile_requests", "", False),
        profiles_need_shared_room=r.bool(
            top, "limit_profile_requests_to_users_who_share_rooms", "", False
        ),
        user_directory_enabled=r.bool(directory, "enabled", "user_directory", True),
        search_all_users=r.bool(directory, "search_all_users", "user_directory", False),
        well_known=WellKnownConfig(
            serve_server_wellknown=r.bool(top, "serve_server_wellknown", "", False),
            client_base_url=well_known_client or public_baseurl,
            support=read_support(r, top.get("support")),
            extra_client_content=read_json_mapping(r, top, "extra_well_known_client_content"),
            rtc_transports=read_rtc_transports(r, top),
            identity_server=r.converted(top, "default_identity_server", "", None, _web_url),
        ),
        secrets=SecretsConfig(
            macaroon_secret_key=read_secret(r, top, "macaroon_secret_key"),
            form_secret=read_secret(r, top, "form_secret"),
        ),
        default_room_version=r.converted(top, "default_room_version", "", "12", parse_room_version),
        max_request_body=r.converted(top, "max_request_body", "", 10 * 1024**2, parse_size),
        log_level=r.converted(top, "log_level", "", "INFO", parse_log_level),
        log_config=r.path(top, "log_config", "", None),
        enable_metrics=r.bool(top, "enable_metrics", "", False),
        gc_thresholds=r.converted(
            top, "gc_thresholds", "", DEFAULT_GC_THRESHOLDS, parse_gc_thresholds
        ),
        allow_public_rooms_without_auth=r.bool(top, "allow_public_rooms_without_auth", "", False),
        max_event_delay_ms=r.converted(
            top, "max_event_delay_duration", "", 86_400_000, _duration_or_off
        ),
        server_notices=read_server_notices(r, top.get("server_notices")),
        app_services=read_appservices(r, top),
        workers=read_workers(r, top, database.is_postgres),
        limit_remote_rooms=read_limit_remote_rooms(r, top),
        caches=caches,
        enable_search=r.bool(top, "enable_search", "", True),
        web_client_location=r.converted(top, "web_client_location", "", None, _web_url),
        prejoin_state=read_prejoin_state(r, top),
        resource_limits=read_resource_limits(r, top),
        auto_accept_invites=read_auto_accept_invites(r, top),
        ignored_keys=tuple(
            sorted(k for k in top if k in SYNAPSE_TOP_LEVEL_KEYS and k not in KNOWN_KEYS)
        )
        + tuple(ignored_cache_keys),
    )
    if config.log_config is not None and not config.log_config.is_file():
        r.problem("log_config", f"no such file: {config.log_config}")
    if config.workers.is_event_persister and "replication" not in config.resources:
        r.problem(
            "worker_listeners",
            "an event persister needs a listener with the replication resource (where the "
            "room writes routed to it arrive; its instance_map entry)",
        )
    elif config.workers.reader_streams & EDU_STREAMS and "replication" not in config.resources:
        r.problem(
            "worker_listeners",
            "a writer of the typing, receipts, to_device, device_lists or presence stream "
            "needs a "
            "listener with the replication resource (where the federation inbound "
            "workers hand it other servers' EDUs; its instance_map entry)",
        )
    media_jobs_elsewhere = config.workers.is_worker and "media" not in config.resources
    if config.workers.runs_media_jobs and media_jobs_elsewhere:
        r.problem(
            "media_instance_running_background_jobs",
            "names this worker, which serves no media: name a media worker (a listener "
            "with the media resource), whose disk holds the media store",
        )
    if config.sso.providers and public_baseurl is None:
        r.problem("oidc_providers", "needs public_baseurl: the providers send users back there")
    if config.registration.consent is not None and public_baseurl is None:
        r.problem("user_consent", "needs public_baseurl: the policy's link points there")
    if threepids.email is not None and public_baseurl is None:
        r.problem("email", "needs public_baseurl: the links we mail point there")
    if config.keys.key_refresh_interval_ms < 60_000 and "key_refresh_interval" in top:
        r.problem("key_refresh_interval", "must be at least one minute")
    if r.problems:
        raise ConfigError(r.problems)
    return config


def load_config(*paths: str | os.PathLike[str]) -> Config:
    """Read and check YAML config files; raise ConfigError listing every problem.

    Several files (`-c homeserver.yaml -c worker1.yaml`) are merged key by key at the
    top level, later files winning: the shared file plus one small file per worker.
    Relative paths resolve against the first file's folder.
    """
    if not paths:
        raise ConfigError(["no config file given"])
    merged: dict[str, Any] = {}
    for path in map(Path, paths):
        raw = _read_yaml(path)
        if not isinstance(raw, Mapping):
            raise ConfigError([f"{path}: the file must be a YAML mapping of settings"])
        merged.update(raw)
    first = Path(paths[0])
    source = " + ".join(str(p) for p in paths)
    config = parse_config(merged, base_dir=first.resolve().parent, source=source)
    return replace(config, config_path=first.resolve())


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}:{where}: not valid YAML: {reason}"]) from None
