"""The rules of ARCHITECTURE.md, enforced by walking every module's AST (the one checker).

Imports (every import counts, including ones inside functions and TYPE_CHECKING blocks):
- `events` and `graph` are pure: stdlib, canonicaljson, signedjson, nacl, each other,
  homeserver.errors and homeserver.ids only.
- `storage` imports no services: only stdlib, its database drivers, homeserver.storage,
  homeserver.events, homeserver.errors, homeserver.ids and homeserver.config.
- the core (homeserver/) never imports federation, except the composition module, the
  app factory and the CLI.
- federation never imports homeserver.client (the client API is not its business).
- rooms never imports sync (sync reads rooms, never the reverse).
- no module imports another package's private names (`_x`, modules included).
- only route modules, the app factory and the composition module import app state
  (homeserver.appstate, federation.appkeys): services get what they use as constructor
  arguments, never by looking it up.

Calls:
- only the room service (homeserver/rooms) writes the event graph: nothing else calls
  the graph-writing methods of storage or the persister, or imports the persister.
- only the composition module and the app factory touch app lifetimes (`cleanup_ctx`,
  `on_startup`, `on_cleanup`, `on_shutdown`).
- route modules (homeserver/client, federation/server, homeserver/admin_api) construct
  no stores.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# homeserver.search.query: what text events contribute to search and the search syntax
# (pure, so the storage layer may index with it).
PURE_PACKAGES = ("homeserver.events", "homeserver.graph", "homeserver.search.query")
PURE_ALLOWED = (
    "canonicaljson",
    "signedjson",
    "nacl",
    "homeserver.events",
    "homeserver.graph",
    "homeserver.errors",
    "homeserver.ids",
)
STORAGE_ALLOWED = (
    "aiosqlite",
    "asyncpg",
    "homeserver.storage",
    "homeserver.events",
    "homeserver.errors",
    "homeserver.ids",
    "homeserver.config",
    "homeserver.search.query",
)
COMPOSITION = (
    "homeserver.app",
    "homeserver.composition",
    "homeserver.composition_federation",
    "homeserver.composition_accounts",
    "homeserver.composition_identity",
    "homeserver.__main__",
)
APP_STATE = ("homeserver.appstate", "federation.appkeys")
ROUTE_MODULES = ("homeserver.client", "federation.server", "homeserver.admin_api")
APP_STATE_READERS = (*ROUTE_MODULES, *COMPOSITION, *APP_STATE, "homeserver.http")
GRAPH_WRITERS = ("homeserver.rooms", "homeserver.storage")
# Methods that write the event graph (events, state groups, extremities, memberships).
GRAPH_WRITES = frozenset(
    {
        "persist_events",
        "update_forward_extremities",
        "mark_redacted",
        "store_state_group",
        "persist_outliers",
        "persist_backfilled",
        "persist_out_of_band_membership",
        "persist_chain",
        "persist_built",
        "persist_join",
        "store_group",
        "store_group_after",
        "purge_room",
        "purge_history",
    }
)
LIFETIME_HOOKS = frozenset({"cleanup_ctx", "on_startup", "on_cleanup", "on_shutdown"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imports_of(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute name) for every import; `from m import x` yields `m.x`, so a
    submodule or a private name imported from `m` is judged by its full name."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
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
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def private_part(name: str) -> int | None:
    """Index of the first private (`_x`, not dunder) part of a dotted name, if any."""
    for i, part in enumerate(name.split(".")):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return i
    return None


def import_violations(module: str, tree: ast.AST, is_package: bool) -> list[str]:
    found = []
    own_package = module if is_package else module.rpartition(".")[0]
    for line, name in imports_of(tree, module, is_package):
        top = name.split(".")[0]
        where = f"{module}:{line} imports {name}"
        third_party_or_stdlib = not within(name, ("homeserver", "federation", "tests"))
        if within(module, PURE_PACKAGES) and top not in STDLIB and not within(name, PURE_ALLOWED):
            found.append(f"{where} (events/graph must stay pure)")
        if (
            within(module, ("homeserver.storage",))
            and top not in STDLIB
            and not within(name, STORAGE_ALLOWED)
        ):
            found.append(f"{where} (storage imports no services)")
        if (
            within(module, ("homeserver",))
            and module not in COMPOSITION
            and within(name, ("federation",))
        ):
            found.append(f"{where} (only the composition module may import federation)")
        if within(module, ("federation",)) and within(name, ("homeserver.client",)):
            found.append(f"{where} (federation never imports homeserver/client)")
        if within(module, ("homeserver.rooms",)) and within(name, ("homeserver.sync",)):
            found.append(f"{where} (rooms never imports sync)")
        if within(name, APP_STATE) and not within(module, APP_STATE_READERS):
            found.append(f"{where} (services get what they use as constructor arguments)")
        if within(name, ("homeserver.rooms.persister",)) and not within(
            module, (*GRAPH_WRITERS, *COMPOSITION)
        ):
            found.append(f"{where} (only the room service writes the event graph)")
        index = private_part(name)
        if index is not None and not third_party_or_stdlib:
            owner = ".".join(name.split(".")[:index])
            if not within(own_package, (owner,)) and module != owner:
                found.append(f"{where} (a private name of another package)")
    return found


def call_violations(module: str, tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in LIFETIME_HOOKS
            and module not in COMPOSITION
        ):
            found.append(
                f"{module}:{node.lineno} uses {node.attr} (lifetimes belong to the "
                "composition module)"
            )
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (
            func.attr
            if isinstance(func, ast.Attribute)
            else func.id
            if isinstance(func, ast.Name)
            else ""
        )
        if name in GRAPH_WRITES and not within(module, GRAPH_WRITERS):
            found.append(
                f"{module}:{node.lineno} calls {name} (only the room service writes the "
                "event graph)"
            )
        if within(module, ROUTE_MODULES) and name.endswith("Store") and name[:1].isupper():
            found.append(f"{module}:{node.lineno} constructs {name} (routes construct no stores)")
    return found


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    tree = ast.parse(source)
    return import_violations(module, tree, is_package) + call_violations(module, tree)


def all_modules() -> Iterator[tuple[str, Path]]:
    for package in ("homeserver", "federation"):
        for path in sorted((REPO / package).rglob("*.py")):
            yield module_name(path), path


def test_the_walk_covers_the_code_base() -> None:
    names = {name for name, _ in all_modules()}
    assert {"homeserver.app", "homeserver.events.event", "federation.keys"} <= names
    assert len(names) > 200


def test_the_rules_hold_for_every_module() -> None:
    problems = []
    for name, path in all_modules():
        problems += violations(name, path.read_text(encoding="utf-8"), path.name == "__init__.py")
    assert problems == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("homeserver.events.x", "import aiohttp", "must stay pure"),
        ("homeserver.graph.x", "from homeserver.storage import Database", "must stay pure"),
        ("homeserver.graph.x", "from ..rooms import y", "must stay pure"),
        ("homeserver.graph.x", "def f():\n    import yaml", "must stay pure"),
        ("homeserver.events.x", "from homeserver.sync import tokens", "must stay pure"),
        ("homeserver.storage.x", "from homeserver.client import versions", "storage imports no"),
        ("homeserver.storage.x", "from ..rooms.ports import P", "storage imports no"),
        ("homeserver.storage.x", "import homeserver.e2ee.keys", "storage imports no"),
        ("homeserver.storage.x", "import aiohttp", "storage imports no"),
        ("homeserver.rooms.x", "import federation.client", "only the composition module"),
        ("homeserver.client.x", "from federation import keys", "only the composition module"),
        ("federation.x", "from homeserver.client.routes import add_route", "federation never"),
        ("federation.server.x", "import homeserver.client", "federation never"),
        ("homeserver.rooms.x", "from homeserver.sync.tokens import T", "rooms never imports"),
        ("homeserver.rooms.x", "from ..sync import activity", "rooms never imports sync"),
        ("federation.x", "from homeserver.rooms.ingest import _check", "a private name"),
        ("homeserver.accounts.x", "from homeserver.storage._util import f", "a private name"),
        ("homeserver.e2ee.keys", "from homeserver.appstate import STORES", "constructor arg"),
        ("homeserver.sync.x", "from homeserver.appstate import SYNC", "constructor arguments"),
        ("federation.sender", "from federation.appkeys import SENDER", "constructor arguments"),
        ("federation.x", "from homeserver.rooms.persister import P", "only the room service"),
        ("federation.x", "async def f(s):\n    await s.persist_events(r, [])", "only the room"),
        ("homeserver.client.x", "def f(s):\n    s.store_state_group(1)", "only the room"),
        ("homeserver.client.x", "def f(app):\n    app.cleanup_ctx.append(g)", "lifetimes"),
        ("federation.x", "def f(app):\n    app.on_startup.append(g)", "lifetimes"),
        ("homeserver.client.x", "def f(db):\n    return PushStore(db)", "construct no stores"),
        ("federation.server.x", "def f(db):\n    return RoomReadStore(db)", "construct no"),
        ("homeserver.admin_api.x", "def f(db):\n    return AdminUserStore(db)", "construct no"),
        ("homeserver.admin.x", "async def f(s):\n    await s.purge_room(r)", "only the room"),
        ("homeserver.admin.x", "from homeserver.appstate import STORES", "constructor arg"),
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
        ("homeserver.composition", "from federation.sender import FederationSender"),
        ("homeserver.storage.x", "from homeserver.events import Event\nimport aiosqlite"),
        ("homeserver.storage.x", "from ._util import now_ms"),
        ("federation.x", "from homeserver.rooms import ports"),
        ("homeserver.sync.x", "from homeserver.rooms.pagination import RoomToken"),
        ("homeserver.client.x", "from homeserver.appstate import STORES"),
        ("federation.server.x", "from federation.appkeys import INBOUND"),
        ("homeserver.admin_api.x", "from homeserver.appstate import ADMIN_USERS"),
        ("homeserver.rooms.purge", "async def f(s):\n    await s.purge_history(r, 1)"),
        ("homeserver.rooms.ingest", "async def f(p):\n    await p.persist_outliers(r, [])"),
        ("homeserver.composition", "def f(app):\n    app.cleanup_ctx.append(g)"),
        ("homeserver.composition", "def f(db):\n    return PushStore(db)"),
        ("homeserver.events.signing", "from signedjson.key import f as _f"),
        ("homeserver.events.x", "from collections.abc import Iterator\nimport __future__"),
    ],
)
def test_the_checker_allows_the_permitted(module: str, source: str) -> None:
    assert violations(module, source) == []
