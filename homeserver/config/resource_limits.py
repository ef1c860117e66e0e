"""Synapse's resource limits: monthly active users (MAU) and a disabled server.

Hosting providers sell Synapse by the monthly active user: `limit_usage_by_mau` with
`max_mau_value` caps how many distinct users may use the server in 30 days (those
already counted keep working; newcomers are refused with M_RESOURCE_LIMIT_EXCEEDED
once it is full), `mau_stats_only` counts without refusing anyone (the metrics only),
`mau_trial_days` (and per appservice `mau_appservice_trial_days`) lets new accounts
in for a grace period before they count, `mau_limit_reserved_threepids` names the
accounts (by email) that always hold a seat, and `mau_limit_alerting: false` keeps
the "limit reached" server notice out of users' clients. `hs_disabled` refuses
everyone with `hs_disabled_message`; `admin_contact` is what both errors tell users
to contact. Defaults are Synapse's (everything off); the checks live in
homeserver/accounts/mau.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from homeserver.config.reader import Reader, describe

RESOURCE_LIMITS_KEYS = (
    "limit_usage_by_mau",
    "max_mau_value",
    "mau_trial_days",
    "mau_appservice_trial_days",
    "mau_limit_alerting",
    "mau_stats_only",
    "mau_limit_reserved_threepids",
    "hs_disabled",
    "hs_disabled_message",
    "admin_contact",
)

# Synapse's documented default (its code falls back to an empty string; an empty error
# message helps no one).
DEFAULT_DISABLED_MESSAGE = "Homeserver is currently blocked"


@dataclass(frozen=True)
class ResourceLimitsConfig:
    limit_usage_by_mau: bool = False
    # Only meaningful with limit_usage_by_mau (Synapse reads it as 0 otherwise).
    max_mau_value: int = 0
    mau_stats_only: bool = False
    mau_trial_days: int = 0
    mau_appservice_trial_days: Mapping[str, int] = field(default_factory=dict, compare=False)
    mau_limit_alerting: bool = True
    # (medium, address) pairs; email addresses in their canonical (stored) form.
    reserved_threepids: tuple[tuple[str, str], ...] = ()
    hs_disabled: bool = False
    hs_disabled_message: str = DEFAULT_DISABLED_MESSAGE
    admin_contact: str | None = None

    @property
    def tracks_mau(self) -> bool:
        """Whether monthly active users are recorded at all (limited or counted only)."""
        return self.limit_usage_by_mau or self.mau_stats_only

    @property
    def may_block(self) -> bool:
        """Whether any request can be refused for resource limits."""
        return self.hs_disabled or self.limit_usage_by_mau

    def trial_days(self, appservice_id: str | None) -> int:
        if appservice_id is not None and appservice_id in self.mau_appservice_trial_days:
            return self.mau_appservice_trial_days[appservice_id]
        return self.mau_trial_days


def read_resource_limits(r: Reader, top: Mapping[str, Any]) -> ResourceLimitsConfig:
    """The keys, checked: a wrong type is a config error rather than a limit that
    silently never applies (or applies to everyone)."""
    limited = r.bool(top, "limit_usage_by_mau", "", False)
    max_mau = r.int(top, "max_mau_value", "", 0, lo=0)
    return ResourceLimitsConfig(
        limit_usage_by_mau=limited,
        max_mau_value=max_mau if limited else 0,
        mau_stats_only=r.bool(top, "mau_stats_only", "", False),
        mau_trial_days=r.int(top, "mau_trial_days", "", 0, lo=0),
        mau_appservice_trial_days=_trial_days_by_service(r, top),
        mau_limit_alerting=r.bool(top, "mau_limit_alerting", "", True),
        reserved_threepids=_reserved(r, top),
        hs_disabled=r.bool(top, "hs_disabled", "", False),
        hs_disabled_message=_message(r, top),
        admin_contact=r.str(top, "admin_contact", "", None),
    )


def _message(r: Reader, top: Mapping[str, Any]) -> str:
    raw = top.get("hs_disabled_message")
    if raw is None or raw == "":
        return DEFAULT_DISABLED_MESSAGE
    if not isinstance(raw, str):
        r.problem("hs_disabled_message", f"expected a string, got {describe(raw)}")
        return DEFAULT_DISABLED_MESSAGE
    return raw


def _trial_days_by_service(r: Reader, top: Mapping[str, Any]) -> dict[str, int]:
    section = r.mapping(top.get("mau_appservice_trial_days"), "mau_appservice_trial_days")
    days: dict[str, int] = {}
    for key, value in (section or {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            r.problem(
                f"mau_appservice_trial_days.{key}",
                f"expected a number of days (0 or more), got {describe(value)}",
            )
            continue
        days[str(key)] = value
    return days


def _reserved(r: Reader, top: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    items = r.list(top, "mau_limit_reserved_threepids", "")
    reserved: list[tuple[str, str]] = []
    for i, item in enumerate(items or ()):
        where = f"mau_limit_reserved_threepids[{i}]"
        medium = item.get("medium") if isinstance(item, Mapping) else None
        address = item.get("address") if isinstance(item, Mapping) else None
        if not isinstance(medium, str) or not isinstance(address, str) or not address:
            r.problem(where, f"expected {{medium: ..., address: ...}}, got {describe(item)}")
            continue
        if medium == "email":
            # The form addresses are stored in (homeserver/accounts/threepids.py).
            local, at, domain = address.strip().rpartition("@")
            if not at or not local or not domain:
                r.problem(where, f"not an email address: {address!r}")
                continue
            address = f"{local.casefold()}@{domain.lower()}"
        reserved.append((medium, address))
    return tuple(reserved)
