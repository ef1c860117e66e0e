"""Synapse's offset paging for admin lists: `from`, `limit`, `next_token`, `total`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_LIMIT = 100
# An admin asks for pages, never for the whole table at once.
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Page:
    start: int = 0
    limit: int = DEFAULT_LIMIT


def page_json(
    body: dict[str, Any], page: Page, count: int, total: int, *, as_string: bool = False
) -> dict[str, Any]:
    """Add `next_token` (the next page's `from`) when more rows follow."""
    if page.start + page.limit < total and count:
        next_from = page.start + count
        body["next_token"] = str(next_from) if as_string else next_from
    return body
