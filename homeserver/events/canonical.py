"""Canonical JSON (appendices: canonical JSON) and the strict number rules of v6+."""

from __future__ import annotations

from typing import Any

import canonicaljson

MAX_SAFE_INTEGER = 2**53 - 1


class CanonicalJsonError(ValueError):
    """The value cannot be represented in (strict) canonical JSON."""


def encode_canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no insignificant whitespace, UTF-8."""
    return canonicaljson.encode_canonical_json(value)


def check_strict_json(value: Any, _depth: int = 0) -> None:
    """Raise CanonicalJsonError if `value` breaks the v6+ rules.

    Integers must lie in ±(2^53-1); floats, NaN and infinities are not allowed. Strings
    must be valid Unicode (no lone surrogates), so they can be encoded as UTF-8.
    """
    if _depth > 100:
        raise CanonicalJsonError("JSON nested too deeply")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJsonError(f"integer {value} is out of range")
        return
    if isinstance(value, float):
        raise CanonicalJsonError("floats are not allowed")
    if isinstance(value, str):
        _check_string(value)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalJsonError("object keys must be strings")
            _check_string(k)
            check_strict_json(v, _depth + 1)
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_strict_json(item, _depth + 1)
        return
    raise CanonicalJsonError(f"unsupported JSON type {type(value).__name__}")


def _check_string(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJsonError("string contains a lone surrogate") from None
