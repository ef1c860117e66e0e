"""What tables the database holds, as the database itself describes them.

Tools that must cover every table, including tables that other areas add later, ask
the schema instead of keeping a list: the room purge (every table with a `room_id`
or an `event_id` column) and `port-db` (every table, copied in foreign-key order).
Each backend reads its own catalogue (`Database.describe_schema`); this module holds
the backend-neutral shape and the ordering.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import StorageError

# Bookkeeping tables of the backends themselves, never application data.
INTERNAL_TABLES = frozenset({"sqlite_sequence", "sqlite_stat1", "sqlite_stat4"})


@dataclass(frozen=True)
class ForeignKey:
    """`columns` of this table reference `ref_columns` of `ref_table`."""

    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    # Declared type per column, lower case ("bigint", "text", "boolean", ...).
    types: dict[str, str] = field(default_factory=dict, compare=False)
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    # Columns whose values a sequence hands out (PostgreSQL identity/serial columns).
    generated: tuple[str, ...] = ()

    def has(self, column: str) -> bool:
        return column in self.columns

    def references(self) -> set[str]:
        """Other tables this one points at (self-references left out)."""
        return {fk.ref_table for fk in self.foreign_keys if fk.ref_table != self.name}


def dependency_order(tables: Iterable[Table]) -> list[Table]:
    """Tables with every referenced table before the tables referencing it (then by
    name), so rows can be inserted in this order and deleted in the reverse one."""
    remaining = {t.name: t for t in tables}
    ordered: list[Table] = []
    while remaining:
        ready = sorted(
            name for name, table in remaining.items() if not table.references() & remaining.keys()
        )
        if not ready:
            cycle = ", ".join(sorted(remaining))
            raise StorageError(f"foreign keys form a cycle between tables: {cycle}")
        for name in ready:
            ordered.append(remaining.pop(name))
    return ordered


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier (both backends), refusing anything odd."""
    if not name or not all(c.isalnum() or c == "_" for c in name):
        raise StorageError(f"refusing unusual SQL identifier {name!r}")
    return f'"{name}"'


def column_list(columns: Sequence[str]) -> str:
    return ", ".join(quote_ident(c) for c in columns)
