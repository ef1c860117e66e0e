"""Converters for single config values (durations, sizes, names, URLs, keys).

Each takes the raw YAML value and returns the checked value or raises ValueError with a
message fit for the user; `Reader.converted` turns that error into a collected problem.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Any

from homeserver.config.model import IPNetwork
from homeserver.config.reader import describe
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.ids import split_server_name

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
        raise ValueError(f"expected a duration like '1d' or milliseconds, got {describe(value)}")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(float(match.group(1)) * _DURATION_UNITS[match.group(2) or "ms"])
    raise ValueError(f"expected a duration like '1d' or milliseconds, got {describe(value)}")


def parse_size(value: Any) -> int:
    """Synapse sizes: a bare integer is bytes; '512K', '50M', '1G' use powers of 1024."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '50M' or bytes, got {describe(value)}")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    raise ValueError(f"expected a size like '50M' or bytes, got {describe(value)}")


def parse_network(value: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise ValueError(f"expected an IP range like '10.0.0.0/8', got {describe(value)}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or CIDR range: {value!r}") from None


def parse_server_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a server name, got {describe(value)}")
    try:
        split_server_name(value)
    except ValueError as exc:
        raise ValueError(f"invalid server name {value!r}: {exc}") from None
    return value


def parse_base_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
        raise ValueError(
            f"expected an http(s) URL like 'https://example.com/', got {describe(value)}"
        )
    return value if value.endswith("/") else value + "/"


def parse_key_base64(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an unpadded base64 ed25519 key, got {describe(value)}")
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except ValueError:
        raise ValueError(f"not valid base64: {value!r}") from None
    if len(raw) != 32:
        raise ValueError(f"an ed25519 key is 32 bytes, this one is {len(raw)}")
    return value.rstrip("=")


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_log_level(value: Any) -> str:
    if isinstance(value, str) and value.upper() in _LOG_LEVELS:
        return value.upper()
    raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}, got {describe(value)}")


def parse_gc_thresholds(value: Any) -> tuple[int, ...]:
    """Synapse's `gc_thresholds`: one to three positive integers."""
    if (
        isinstance(value, list)
        and 1 <= len(value) <= 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31 for v in value)
    ):
        return tuple(value)
    raise ValueError(f"expected a list of one to three positive integers, got {describe(value)}")


def parse_room_version(value: Any) -> str:
    value = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(value, str) and value in KNOWN_ROOM_VERSIONS:
        return value
    raise ValueError(f"unknown room version {value!r}; known: {', '.join(KNOWN_ROOM_VERSIONS)}")
