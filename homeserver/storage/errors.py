"""Backend-neutral storage exceptions.

Callers catch these rather than `sqlite3.*` or `asyncpg.*` errors, so swapping the
database backend never changes error handling above the storage layer.
"""

from __future__ import annotations


class StorageError(Exception):
    """The database cannot be used, or an operation on it failed."""


class DatabaseUnavailableError(StorageError):
    """The connection to the database broke or could not be made (a PostgreSQL
    restart, say): the request may succeed if retried; nothing was half-done."""


class IntegrityError(StorageError):
    """A constraint (unique key, foreign key, NOT NULL) rejected a write."""


class UnstorableValueError(StorageError):
    """A value the backend cannot store at all (PostgreSQL text cannot hold U+0000).

    The value came from outside (SQLite would have stored it), so callers report it as
    the client's mistake rather than a server failure.
    """
