"""homeserver/events is pure (ARCHITECTURE.md): it imports only the standard library,
canonicaljson, signedjson, nacl, its own modules and the (equally pure) identifier
grammar in homeserver/ids.py."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import homeserver.events

EVENTS_DIR = Path(homeserver.events.__file__).parent
ALLOWED_THIRD_PARTY = {"canonicaljson", "signedjson", "nacl"}
ALLOWED_HOMESERVER = {"homeserver.events", "homeserver.ids"}


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by one file (relative ones resolved)."""
    package = "homeserver.events"
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                names.append(node.module or "")
    return names


def test_events_package_imports_only_pure_modules() -> None:
    files = sorted(EVENTS_DIR.glob("*.py"))
    assert {"signing.py", "validation.py", "builder.py"} <= {f.name for f in files}
    bad = []
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or top == "__future__":
                continue
            if any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_HOMESERVER):
                continue
            bad.append(f"{path.name}: {name}")
    assert bad == []


def test_the_checker_sees_relative_imports() -> None:
    names = _imports(EVENTS_DIR / "validation.py")
    assert "homeserver.ids" in names and "homeserver.events.canonical" in names
