"""The auth-rules modules of homeserver/graph are pure (ARCHITECTURE.md): standard library,
canonicaljson, signedjson, nacl, homeserver.events, homeserver.ids and each other only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import homeserver.graph

GRAPH_DIR = Path(homeserver.graph.__file__).parent
MODULES = ("auth_rules.py", "power_levels.py", "third_party_invite.py")
ALLOWED_THIRD_PARTY = {"canonicaljson", "signedjson", "nacl"}
ALLOWED_HOMESERVER = ("homeserver.events", "homeserver.ids", "homeserver.graph")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = "homeserver.graph" if node.level == 1 else "homeserver"
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                names.append(node.module or "")
    return names


def test_auth_rules_modules_import_only_pure_modules() -> None:
    bad = []
    for name in MODULES:
        imports = _imports(GRAPH_DIR / name)
        assert imports, name
        for module in imports:
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or top == "__future__":
                continue
            if any(module == ok or module.startswith(ok + ".") for ok in ALLOWED_HOMESERVER):
                continue
            bad.append(f"{name}: {module}")
    assert bad == []


def test_the_checker_resolves_relative_imports() -> None:
    names = _imports(GRAPH_DIR / "auth_rules.py")
    assert "homeserver.ids" in names and "homeserver.graph.power_levels" in names
