"""Helpers shared by the stores: JSON text encoding, clocks, IN-list chunking."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# SQLite allows 32766 host parameters; stay far below for any backend.
MAX_IN_LIST = 500
# A LIMIT that means "no limit" on every backend.
NO_LIMIT = 2**62


def dump_json(value: Any) -> str:
    """Compact JSON text. ASCII-escaped so lone surrogates survive; round-trips exactly."""
    return json.dumps(value, separators=(",", ":"))


def load_json(text: str) -> Any:
    return json.loads(text)


def now_ms() -> int:
    return int(time.time() * 1000)


def chunks(items: Sequence[T], size: int = MAX_IN_LIST) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def placeholders(count: int, start: int = 1) -> str:
    """`$1, $2, ...` for an IN list of `count` values starting at `$start`."""
    return ", ".join(f"${i}" for i in range(start, start + count))
