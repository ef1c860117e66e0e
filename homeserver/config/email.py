"""Synapse's `email` section and the 3PID keys beside it: the SMTP server we send
validation and password-reset mail through, and who may add which address.

Without an `email` section nothing is mailed: adding an address, resetting a password
by email and registering with one are refused (as before). `enable_notifs` mails users
about messages they left unread (homeserver/push/email_notifier.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.headerregistry import Address
from email.utils import parseaddr
from typing import Any

from homeserver.config.accounts_model import (
    EmailConfig,
    LocalThreepidPattern,
    SmtpConfig,
    ThreepidConfig,
)
from homeserver.config.reader import Reader
from homeserver.config.values import parse_duration_ms

EMAIL_KEYS = (
    "email",
    "enable_3pid_changes",
    "registrations_require_3pid",
    "request_token_inhibit_3pid_errors",
    "next_link_domain_whitelist",
    "allowed_local_3pids",
)

_SECTION_KEYS = frozenset(
    {
        "smtp_host",
        "smtp_port",
        "smtp_user",
        "smtp_pass",
        "force_tls",
        "require_transport_security",
        "enable_tls",
        "notif_from",
        "app_name",
        "validation_token_lifetime",
        "enable_notifs",
        "notif_for_new_users",
        "client_base_url",
        "notif_delay",
        "smtp_timeout",
    }
)


def _from_address(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a From address, e.g. 'Matrix <noreply@example.org>'")
    name, address = parseaddr(value)
    if "@" not in address or "\n" in value or "\r" in value:
        raise ValueError(f"not an email address: {value!r}")
    try:
        Address(display_name=name, addr_spec=address)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"not an email address: {value!r} ({exc})") from None
    return value.strip()


def _client_base_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ValueError("expected an http(s) URL, e.g. https://app.element.io")
    return value.rstrip("/")


def _email_section(r: Reader, raw: Any) -> EmailConfig | None:
    m = r.mapping(raw, "email")
    if not m:  # absent, or an empty section left in a file: no mail
        return None
    where = "email"
    r.check_keys(m, _SECTION_KEYS, where)
    if m.get("notif_from") is None:
        r.problem(f"{where}.notif_from", "required: the From address of our mail")
    smtp = SmtpConfig(
        host=r.str(m, "smtp_host", where, "localhost"),
        port=r.int(m, "smtp_port", where, 25, 1, 65535),
        user=r.str(m, "smtp_user", where),
        password=r.str(m, "smtp_pass", where),
        force_tls=r.bool(m, "force_tls", where, False),
        enable_tls=r.bool(m, "enable_tls", where, True),
        require_transport_security=r.bool(m, "require_transport_security", where, False),
        timeout_s=float(r.int(m, "smtp_timeout", where, 30, 1, 600)),
    )
    if smtp.require_transport_security and not (smtp.enable_tls or smtp.force_tls):
        r.problem(f"{where}.require_transport_security", "needs enable_tls or force_tls")
    return EmailConfig(
        smtp=smtp,
        notif_from=r.converted(m, "notif_from", where, "", _from_address),
        app_name=r.str(m, "app_name", where, "Matrix"),
        validation_token_lifetime_ms=r.converted(
            m, "validation_token_lifetime", where, 60 * 60 * 1000, parse_duration_ms
        ),
        enable_notifs=r.bool(m, "enable_notifs", where, False),
        notif_for_new_users=r.bool(m, "notif_for_new_users", where, True),
        client_base_url=r.converted(m, "client_base_url", where, None, _client_base_url),
        notif_delay_ms=r.converted(m, "notif_delay", where, 10 * 60 * 1000, parse_duration_ms),
    )


def _allowed_local(r: Reader, top: Mapping[str, Any]) -> tuple[LocalThreepidPattern, ...]:
    items = r.list(top, "allowed_local_3pids", "") or []
    out = []
    for i, item in enumerate(items):
        where = f"allowed_local_3pids[{i}]"
        m = r.mapping(item, where)
        if m is None:
            continue
        r.check_keys(m, {"medium", "pattern"}, where)
        medium, pattern = r.str(m, "medium", where), r.str(m, "pattern", where)
        if medium not in ("email", "msisdn") or not pattern:
            r.problem(where, "expected {medium: email, pattern: <regular expression>}")
            continue
        try:
            out.append(LocalThreepidPattern(medium, re.compile(pattern)))
        except re.error as exc:
            r.problem(f"{where}.pattern", f"not a regular expression: {exc}")
    return tuple(out)


def registration_requires_email(r: Reader, top: Mapping[str, Any]) -> bool:
    """Synapse's registrations_require_3pid (only email is possible here)."""
    required = r.str_list(top, "registrations_require_3pid", "") or []
    for medium in required:
        if medium != "email":
            r.problem("registrations_require_3pid", f"only email can be required, not {medium!r}")
    if "email" in required and top.get("email") is None:
        r.problem("registrations_require_3pid", "needs an email section to send the mail")
    return "email" in required


def read_threepids(r: Reader, top: Mapping[str, Any]) -> ThreepidConfig:
    email = _email_section(r, top.get("email"))
    hosts = r.str_list(top, "next_link_domain_whitelist", "")
    return ThreepidConfig(
        email=email,
        changes_enabled=r.bool(top, "enable_3pid_changes", "", True),
        inhibit_errors=r.bool(top, "request_token_inhibit_3pid_errors", "", False),
        next_link_hosts=None if hosts is None else frozenset(h.lower() for h in hosts),
        allowed_local=_allowed_local(r, top),
    )
