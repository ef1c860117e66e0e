"""Synapse's `retention:` section: message retention policies (MSC1763).

A room's `m.room.retention` state event (or, without one, the server's default policy)
says how long its messages live (`max_lifetime`, milliseconds). With `enabled: true`:

- messages older than that are no longer served to clients (rooms/retention reads);
- purge jobs delete them from the database periodically (homeserver/retention_purge.py).

`allowed_lifetime_min` / `allowed_lifetime_max` bound the lifetime the purge uses (an
operator may have to keep data for a minimum time, or delete it after a maximum). As in
Synapse, an out-of-range value in a room's event is not refused: it is clamped.

Defaults and checks follow Synapse: off; no default policy; no bounds; one purge job
running daily for every room; a minimum above its maximum is a config error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.config.reader import MISSING, Reader

DAY_MS = 86_400_000
_SECTION_KEYS = frozenset(
    {"enabled", "default_policy", "allowed_lifetime_min", "allowed_lifetime_max", "purge_jobs"}
)
_POLICY_KEYS = frozenset({"min_lifetime", "max_lifetime"})
_JOB_KEYS = frozenset({"interval", "shortest_max_lifetime", "longest_max_lifetime"})


@dataclass(frozen=True)
class PurgeJob:
    """Every `interval_ms`, purge the rooms whose policy's max_lifetime is above
    `shortest_max_lifetime_ms` (exclusive) and at most `longest_max_lifetime_ms`
    (inclusive); None: no bound on that side."""

    interval_ms: int
    shortest_max_lifetime_ms: int | None = None
    longest_max_lifetime_ms: int | None = None

    def covers(self, max_lifetime_ms: int) -> bool:
        low, high = self.shortest_max_lifetime_ms, self.longest_max_lifetime_ms
        return (low is None or max_lifetime_ms > low) and (high is None or max_lifetime_ms <= high)


@dataclass(frozen=True)
class RetentionSettings:
    enabled: bool = False
    default_min_lifetime_ms: int | None = None
    default_max_lifetime_ms: int | None = None
    allowed_lifetime_min_ms: int | None = None
    allowed_lifetime_max_ms: int | None = None
    purge_jobs: tuple[PurgeJob, ...] = (PurgeJob(DAY_MS),)

    def declared_max_lifetime(self, room_max_ms: int | None) -> int | None:
        """The room's own max_lifetime, else the default policy's (None: keep forever)."""
        return room_max_ms if room_max_ms is not None else self.default_max_lifetime_ms

    def purge_lifetime(self, room_max_ms: int | None) -> int | None:
        """What the purge jobs delete after: the declared lifetime brought within
        [allowed_lifetime_min, allowed_lifetime_max] (first raised, then lowered, as in
        Synapse: a legal maximum wins over a legal minimum)."""
        lifetime = self.declared_max_lifetime(room_max_ms)
        if lifetime is None:
            return None
        if self.allowed_lifetime_min_ms is not None:
            lifetime = max(lifetime, self.allowed_lifetime_min_ms)
        if self.allowed_lifetime_max_ms is not None:
            lifetime = min(lifetime, self.allowed_lifetime_max_ms)
        return lifetime

    def hidden_after(self, room_max_ms: int | None) -> int | None:
        """How old a message may be and still be served to clients: the declared
        lifetime (what the room asked for, as Synapse hides by), and never past
        allowed_lifetime_max (what the next purge deletes anyway: a message must not be
        shown until a purge happens to run, then vanish). None: no limit."""
        if not self.enabled:
            return None
        declared = self.declared_max_lifetime(room_max_ms)
        cap = self.allowed_lifetime_max_ms
        return declared if declared is None or cap is None else min(declared, cap)


def read_retention(r: Reader, top: Mapping[str, Any]) -> RetentionSettings:
    section = r.mapping(top.get("retention"), "retention")
    if section is None:
        return RetentionSettings()
    r.check_keys(section, _SECTION_KEYS, "retention")
    default_min = default_max = None
    policy = r.mapping(section.get("default_policy"), "retention.default_policy")
    if policy is not None:
        r.check_keys(policy, _POLICY_KEYS, "retention.default_policy")
        where = "retention.default_policy"
        default_min = _duration(r, policy, "min_lifetime", where)
        default_max = _duration(r, policy, "max_lifetime", where)
        _ordered(r, default_min, default_max, where, "min_lifetime", "max_lifetime")
    allowed_min = _duration(r, section, "allowed_lifetime_min", "retention")
    allowed_max = _duration(r, section, "allowed_lifetime_max", "retention")
    _ordered(
        r, allowed_min, allowed_max, "retention", "allowed_lifetime_min", "allowed_lifetime_max"
    )
    return RetentionSettings(
        enabled=r.bool(section, "enabled", "retention", False),
        default_min_lifetime_ms=default_min,
        default_max_lifetime_ms=default_max,
        allowed_lifetime_min_ms=allowed_min,
        allowed_lifetime_max_ms=allowed_max,
        purge_jobs=_purge_jobs(r, section) or RetentionSettings.purge_jobs,
    )


def _purge_jobs(r: Reader, section: Mapping[str, Any]) -> tuple[PurgeJob, ...]:
    """The configured jobs; none (or an empty list): Synapse's one daily job for all."""
    jobs = []
    for i, raw in enumerate(r.list(section, "purge_jobs", "retention") or []):
        where = f"retention.purge_jobs[{i}]"
        job = r.mapping(raw, where)
        if job is None:
            continue
        r.check_keys(job, _JOB_KEYS, where)
        if r.raw(job, "interval") is MISSING:
            r.problem(f"{where}.interval", "required: how often this job runs, e.g. 1d")
            continue
        interval = _duration(r, job, "interval", where)
        if interval is None:
            continue  # not a duration: reported
        if interval <= 0:
            r.problem(f"{where}.interval", "must be more than 0")
            continue
        shortest = _duration(r, job, "shortest_max_lifetime", where)
        longest = _duration(r, job, "longest_max_lifetime", where)
        _ordered(r, shortest, longest, where, "shortest_max_lifetime", "longest_max_lifetime")
        jobs.append(PurgeJob(interval, shortest, longest))
    return tuple(jobs)


def _duration(r: Reader, m: Mapping[str, Any], key: str, where: str) -> int | None:
    from homeserver.config.values import parse_duration_ms  # values imports model

    value = r.converted(m, key, where, None, parse_duration_ms)
    return int(value) if value is not None else None


def _ordered(
    r: Reader, low: int | None, high: int | None, where: str, low_key: str, high_key: str
) -> None:
    if low is not None and high is not None and low > high:
        r.problem(f"{where}.{low_key}", f"can not be greater than {high_key}")
