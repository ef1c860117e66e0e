"""Backend-neutral storage exceptions.

Callers catch these rather than `sqlite3.*` or `asyncpg.*` errors, so swapping the
database backend never changes error handling above the storage layer.
"""

from __future__ import annotations


class StorageError(Exception):
    """The database cannot be used, or an operation on it failed."""


class IntegrityError(StorageError):
    """A constraint (unique key, foreign key, NOT NULL) rejected a write."""
