"""Synapse's `push:` section: what notifications may say and whether they are made.

- `enabled: false`: no push rules run, so no unread counts and no notifications (the
  CPU a server without phones or counts saves, as in Synapse);
- `include_content: false`: a push gateway (and a notification mail) is never handed
  what a message says, only who wrote in which room (the gateway is a third party:
  Apple's or Google's servers see what it forwards);
- `group_unread_count_by_room: false`: the app badge counts messages, not rooms;
- `jitter_delay`: each push waits a random time up to this after its event was sent,
  so an observer of the push traffic cannot match it to the message's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.config.model import PushSettings
from homeserver.config.reader import Reader
from homeserver.config.values import parse_duration_ms

_KEYS = frozenset({"enabled", "include_content", "group_unread_count_by_room", "jitter_delay"})
MAX_JITTER_MS = 3_600_000  # an hour: past that a "notification" is no longer one


def read_push(r: Reader, top: Mapping[str, Any]) -> PushSettings:
    section = r.mapping(top.get("push"), "push")
    if section is None:
        return PushSettings()
    r.check_keys(section, _KEYS, "push")
    jitter = r.converted(section, "jitter_delay", "push", 0, parse_duration_ms) or 0
    if not 0 <= jitter <= MAX_JITTER_MS:
        r.problem("push.jitter_delay", "must be between 0 and 1h")
        jitter = 0
    return PushSettings(
        enabled=r.bool(section, "enabled", "push", True),
        include_content=r.bool(section, "include_content", "push", True),
        group_unread_count_by_room=r.bool(section, "group_unread_count_by_room", "push", True),
        jitter_delay_ms=jitter,
    )
