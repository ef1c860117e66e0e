"""Logging as Synapse admins configure it: `log_level`, or a `log_config` file.

`log_config` is a Python logging dictConfig in YAML, the file Synapse reads. Synapse's
own classes in such a file are mapped to equivalents, so a copied Synapse log config
works as it is:

- `synapse.logging.context.LoggingContextFilter` -> `RequestContextFilter` (sets
  `%(request)s` to the request being served, e.g. "GET-42");
- `synapse.logging.handlers.PeriodicallyFlushingMemoryHandler` -> the standard
  `logging.handlers.MemoryHandler` (its `period` is dropped);
- `disable_existing_loggers` defaults to false (Synapse's sample sets it so).

Every log record carries `request` (set per request by the request log middleware),
so `%(request)s` works in any formatter. By default SQL statements are not logged
even at DEBUG: set the `homeserver.storage.sql` logger to DEBUG for that.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import logging.config
import sys
from pathlib import Path
from typing import Any

import yaml

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_counter = itertools.count(1)

DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that flood DEBUG output with per-statement noise; theirs only when asked.
QUIET_LOGGERS = {
    "aiosqlite": logging.INFO,
    "asyncio": logging.INFO,
    "homeserver.storage.sql": logging.INFO,
}

SYNAPSE_CLASSES = {
    "synapse.logging.context.LoggingContextFilter": "homeserver.logging_setup.RequestContextFilter",
    "synapse.logging.handlers.PeriodicallyFlushingMemoryHandler": "logging.handlers.MemoryHandler",
}


class LogConfigError(Exception):
    """The log_config file cannot be used; the message says why."""


def new_request_id(method: str) -> contextvars.Token[str]:
    """Name the request being served (for `%(request)s`); reset with the token."""
    return REQUEST_ID.set(f"{method}-{next(_counter)}")


class RequestContextFilter(logging.Filter):
    """Synapse's LoggingContextFilter: adds `request` to records (accepts its args)."""

    def __init__(self, request: str = "", **_: Any) -> None:
        super().__init__()

    def filter(self, record: logging.LogRecord) -> bool:
        record.request = REQUEST_ID.get()
        return True


def _install_record_factory() -> None:
    base = logging.getLogRecordFactory()
    if getattr(base, "_adds_request", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        record.request = REQUEST_ID.get()
        return record

    factory._adds_request = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _translate(config: dict[str, Any]) -> dict[str, Any]:
    """Map Synapse's classes in a dictConfig to ours (see the module docstring)."""
    for section in ("filters", "handlers", "formatters"):
        for item in (config.get(section) or {}).values():
            if not isinstance(item, dict):
                continue
            for key in ("()", "class"):
                if item.get(key) in SYNAPSE_CLASSES:
                    item[key] = SYNAPSE_CLASSES[item[key]]
            if item.get("class") == "logging.handlers.MemoryHandler":
                item.pop("period", None)
    config.setdefault("disable_existing_loggers", False)
    return config


def load_log_config(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LogConfigError(f"cannot read log_config {path}: {exc}") from None
    if not isinstance(raw, dict) or "version" not in raw:
        raise LogConfigError(f"log_config {path} is not a logging dictConfig (no 'version')")
    return _translate(raw)


def setup_logging(level: str, log_config: Path | None = None) -> None:
    """Configure logging for the server process (raises LogConfigError)."""
    _install_record_factory()
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)
    if log_config is not None:
        config = load_log_config(log_config)
        try:
            logging.config.dictConfig(config)
        except (ValueError, TypeError, AttributeError, ImportError) as exc:
            raise LogConfigError(f"log_config {log_config} is not usable: {exc}") from None
        return
    logging.basicConfig(
        stream=sys.stderr, level=getattr(logging, level), format=DEFAULT_FORMAT, force=True
    )
