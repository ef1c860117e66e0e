"""Synapse's `auto_accept_invites` section: the server joins rooms for invited users.

Keys and defaults are Synapse's (1.109+): `enabled` (false), `only_for_direct_messages`
(false: invites whose member event says `is_direct: true` only), `only_from_local_users`
(false: invites sent by users of this server only) and `worker_to_run_on` (null: the
main process). All are checked: a typo that left invites unaccepted, or accepted when
the operator restricted them, must not pass silently. What acting on them means lives
in homeserver/rooms/auto_accept_invites.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.config.reader import Reader

AUTO_ACCEPT_KEYS = ("auto_accept_invites",)
_SECTION = "auto_accept_invites"
_KEYS = frozenset(
    {"enabled", "only_for_direct_messages", "only_from_local_users", "worker_to_run_on"}
)


@dataclass(frozen=True)
class AutoAcceptInvitesConfig:
    """Which invites of local users the server accepts on their behalf."""

    enabled: bool = False
    only_for_direct_messages: bool = False
    only_from_local_users: bool = False
    # Synapse's worker name; None: the main. Our once-per-deployment jobs all run on
    # the main (replication/writers.py), so another name only changes a log line.
    worker_to_run_on: str | None = None


def read_auto_accept_invites(r: Reader, top: Mapping[str, Any]) -> AutoAcceptInvitesConfig:
    """The section, checked (absent or null: disabled, as in Synapse)."""
    section = r.mapping(top.get(_SECTION), _SECTION)
    if section is None:
        return AutoAcceptInvitesConfig()
    r.check_keys(section, _KEYS, _SECTION)
    return AutoAcceptInvitesConfig(
        enabled=r.bool(section, "enabled", _SECTION, False),
        only_for_direct_messages=r.bool(section, "only_for_direct_messages", _SECTION, False),
        only_from_local_users=r.bool(section, "only_from_local_users", _SECTION, False),
        worker_to_run_on=r.str(section, "worker_to_run_on", _SECTION, None),
    )
