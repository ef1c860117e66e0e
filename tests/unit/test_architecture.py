"""The import rules of ARCHITECTURE.md, enforced by walking every module's AST.

- homeserver/events and homeserver/graph are pure: stdlib, canonicaljson, signedjson,
  nacl, each other, homeserver.errors and homeserver.ids only.
- homeserver/storage never imports homeserver.rooms, homeserver.client or federation.
- the core (homeserver/) never imports federation, except the composition root
  (homeserver/app.py) and the CLI (homeserver/__main__.py).

Every import counts, including ones inside functions and TYPE_CHECKING blocks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

PURE_PACKAGES = ("homeserver.events", "homeserver.graph")
PURE_ALLOWED = (
    "canonicaljson",
    "signedjson",
    "nacl",
    "homeserver.events",
    "homeserver.graph",
    "homeserver.errors",
    "homeserver.ids",
)
STORAGE_FORBIDDEN = ("homeserver.rooms", "homeserver.client", "federation")
FEDERATION_ALLOWED_IN = ("homeserver.app", "homeserver.composition", "homeserver.__main__")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in `source`, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if (REPO / target.replace(".", "/")).is_dir():
                # `from package import x`: x may be a submodule; judge each name.
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"
            else:
                yield node.lineno, target


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    found = []
    for line, name in imports_of(source, module, is_package):
        top = name.split(".")[0]
        where = f"{module}:{line} imports {name}"
        pure = within(module, PURE_PACKAGES)
        if pure and top not in STDLIB and not within(name, PURE_ALLOWED):
            found.append(f"{where} (events/graph must stay pure)")
        if within(module, ("homeserver.storage",)) and within(name, STORAGE_FORBIDDEN):
            found.append(f"{where} (storage must not depend on its consumers)")
        if (
            within(module, ("homeserver",))
            and module not in FEDERATION_ALLOWED_IN
            and within(name, ("federation",))
        ):
            found.append(f"{where} (only homeserver/app.py may import federation)")
    return found


def all_modules() -> Iterator[tuple[str, Path]]:
    for package in ("homeserver", "federation"):
        for path in sorted((REPO / package).rglob("*.py")):
            yield module_name(path), path


def test_the_walk_covers_the_code_base() -> None:
    names = {name for name, _ in all_modules()}
    assert {"homeserver.app", "homeserver.events.event", "federation.keys"} <= names


def test_import_rules_hold_for_every_module() -> None:
    problems = []
    for name, path in all_modules():
        problems += violations(name, path.read_text(encoding="utf-8"), path.name == "__init__.py")
    assert problems == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("homeserver.events.x", "import aiohttp", "events/graph must stay pure"),
        ("homeserver.graph.x", "from homeserver.storage import Database", "must stay pure"),
        ("homeserver.graph.x", "from ..rooms import y", "must stay pure"),
        ("homeserver.graph.x", "def f():\n    import yaml", "must stay pure"),
        ("homeserver.storage.x", "from homeserver.client import versions", "storage must not"),
        ("homeserver.storage.x", "from ..rooms.ports import P", "storage must not"),
        ("homeserver.rooms.x", "import federation.client", "only homeserver/app.py"),
        ("homeserver.client.x", "from federation import keys", "only homeserver/app.py"),
    ],
)
def test_the_checker_catches_violations(module: str, source: str, expected: str) -> None:
    (problem,) = violations(module, source)
    assert expected in problem


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("homeserver.events.x", "import json\nfrom . import canonical\nimport nacl.signing"),
        ("homeserver.graph.x", "from homeserver.events import Event\nfrom ..ids import UserID"),
        ("homeserver.graph.x", "from homeserver import errors"),
        ("homeserver.app", "import federation.keys"),
        ("homeserver.storage.x", "from homeserver.events import Event"),
        ("federation.x", "from homeserver.rooms import ports"),
    ],
)
def test_the_checker_allows_the_permitted(module: str, source: str) -> None:
    assert violations(module, source) == []
