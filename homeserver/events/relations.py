"""What an event says it relates to (`content.m.relates_to`), for the relations index."""

from __future__ import annotations

from .event import Event


def relation_of(event: Event) -> tuple[str, str, str | None] | None:
    """(target event ID, rel_type, annotation key or None), or None if not a relation."""
    rel = event.content.get("m.relates_to")
    if not isinstance(rel, dict):
        return None
    target, rel_type = rel.get("event_id"), rel.get("rel_type")
    if not isinstance(target, str) or not isinstance(rel_type, str):
        return None
    key = rel.get("key") if rel_type == "m.annotation" else None
    return target, rel_type, key if isinstance(key, str) else None
