"""Synapse's cache settings: `caches.global_factor` scales every cache, a
`caches.per_cache_factors` entry one cache by its name instead, `event_cache_size` the
event caches' entries. Memory on a big server is mostly caches: these are the knobs an
operator turns (down on a small machine, up for a busy one).

Synapse's other `caches` keys (entry expiry, the sync response cache, memory-based
autotuning) have no counterpart here: accepted, and named in the startup warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.config.model import CacheSettings
from homeserver.config.reader import Reader, describe
from homeserver.config.values import parse_size

SYNAPSE_ONLY_CACHE_KEYS = frozenset(
    {"expire_caches", "cache_entry_ttl", "sync_response_cache_duration", "cache_autotuning"}
)
_KEYS = frozenset({"global_factor", "per_cache_factors"}) | SYNAPSE_ONLY_CACHE_KEYS


def _factor(r: Reader, value: Any, where: str) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        r.problem(where, f"expected a number above 0, got {describe(value)}")
        return None
    return float(value)


def read_caches(r: Reader, top: Mapping[str, Any]) -> tuple[CacheSettings, list[str]]:
    """The settings, and the Synapse-only keys given (for the startup warning)."""
    event_cache_size = r.converted(top, "event_cache_size", "", None, parse_size)
    if event_cache_size is not None and event_cache_size < 1:
        r.problem("event_cache_size", "must be at least 1")
        event_cache_size = None
    section = r.mapping(top.get("caches"), "caches")
    if section is None:
        return CacheSettings(event_cache_size=event_cache_size), []
    r.check_keys(section, _KEYS, "caches")
    global_factor = 1.0
    if section.get("global_factor") is not None:
        global_factor = _factor(r, section["global_factor"], "caches.global_factor") or 1.0
    per_cache: dict[str, float] = {}
    raw = r.mapping(section.get("per_cache_factors"), "caches.per_cache_factors") or {}
    for name, value in raw.items():
        factor = _factor(r, value, f"caches.per_cache_factors.{name}")
        if factor is not None:
            per_cache[name] = factor
    ignored = sorted(f"caches.{k}" for k in section if k in SYNAPSE_ONLY_CACHE_KEYS)
    settings = CacheSettings(global_factor, per_cache, event_cache_size)
    return settings, ignored
