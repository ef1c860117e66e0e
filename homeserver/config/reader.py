"""The collecting reader: typed getters that record a problem instead of raising.

Every getter returns a usable default after a mistake, so parsing carries on and the
user sees every problem in their file at once (which file, which key path, what was
expected), not just the first.
"""

from __future__ import annotations

import builtins
import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

MISSING: Any = object()


class Reader:
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
            self.problem(where, f"expected a mapping, got {describe(value)}")
            return None
        bad = [k for k in value if not isinstance(k, str)]
        for k in bad:
            self.problem(where, f"keys must be strings, got {k!r}")
        return value

    def check_keys(self, m: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str):
        for key in m:
            if isinstance(key, str) and key not in allowed:
                self.problem(join_path(where, key), "unknown key" + suggest(key, allowed))

    def raw(self, m: Mapping[str, Any] | None, key: str) -> Any:
        """The value, or MISSING when absent or empty (an empty value means the default)."""
        if m is None:
            return MISSING
        value = m.get(key, MISSING)
        return MISSING if value is None else value

    # -- scalars

    def bool(self, m, key: str, where: str, default: bool) -> bool:
        value = self.raw(m, key)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(join_path(where, key), f"expected true or false, got {describe(value)}")
            return default
        return value

    def int(
        self, m, key: str, where: str, default: int, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self.raw(m, key)
        if value is MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(join_path(where, key), f"expected an integer, got {describe(value)}")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.problem(
                join_path(where, key), f"expected an integer from {lo} to {hi}, got {value}"
            )
            return default
        return value

    def str(self, m, key: str, where: str, default: Any = None) -> Any:
        value = self.raw(m, key)
        if value is MISSING:
            return default
        if not isinstance(value, str) or not value:
            self.problem(
                join_path(where, key), f"expected a non-empty string, got {describe(value)}"
            )
            return default
        return value

    def path(self, m, key: builtins.str, where: builtins.str, default: Path | None) -> Path | None:
        value = self.str(m, key, where)
        return default if value is None else self.resolve(value)

    def resolve(self, value: builtins.str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(os.path.abspath(self.base_dir / path))

    def converted(
        self, m, key: builtins.str, where: builtins.str, default: Any, convert: Callable[[Any], Any]
    ):
        """A value passed through `convert`, whose ValueError becomes a problem."""
        value = self.raw(m, key)
        if value is MISSING:
            return default
        try:
            return convert(value)
        except ValueError as exc:
            self.problem(join_path(where, key), str(exc))
            return default

    def list(self, m, key: builtins.str, where: builtins.str) -> builtins.list[Any] | None:
        value = self.raw(m, key)
        if value is MISSING:
            return None
        if not isinstance(value, list):
            self.problem(join_path(where, key), f"expected a list, got {describe(value)}")
            return None
        return value

    def str_list(
        self, m, key: builtins.str, where: builtins.str
    ) -> builtins.list[builtins.str] | None:
        items = self.list(m, key, where)
        if items is None:
            return None
        good = []
        for i, item in enumerate(items):
            if isinstance(item, str) and item:
                good.append(item)
            else:
                self.problem(
                    f"{join_path(where, key)}[{i}]", f"expected a string, got {describe(item)}"
                )
        return good


def join_path(where: builtins.str, key: builtins.str) -> builtins.str:
    return f"{where}.{key}" if where else key


def describe(value: Any) -> builtins.str:
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


def suggest(
    key: builtins.str, allowed: set[builtins.str] | frozenset[builtins.str]
) -> builtins.str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
