"""Synapse's `presence:` section: `enabled: true` (the default), `false` (no presence at
all: nothing is tracked, shown, sent or accepted from other servers: the CPU and
traffic a large server saves) or `"untracked"` (users set their presence themselves;
the server never changes it on its own from their syncs and activity)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.config.reader import Reader, describe

PRESENCE_MODES = ("on", "untracked", "off")
# Synapse's other key, accepted and not acted on: offline users in sync (we send what
# changed, offline included). Its module hook (presence_router) is refused as unknown.
_ACCEPTED = frozenset({"enabled", "include_offline_users_on_sync"})


def read_presence_mode(r: Reader, top: Mapping[str, Any]) -> str:
    section = r.mapping(top.get("presence"), "presence")
    if section is None:
        return "on"
    r.check_keys(section, _ACCEPTED, "presence")
    enabled = section.get("enabled", True)
    if enabled is True or enabled is None:
        return "on"
    if enabled is False:
        return "off"
    if enabled == "untracked":
        return "untracked"
    r.problem("presence.enabled", f"expected true, false or 'untracked', got {describe(enabled)}")
    return "on"
