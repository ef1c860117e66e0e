"""Synapse's TURN keys (`turn_uris`, `turn_shared_secret[_path]`, `turn_username`,
`turn_password`, `turn_user_lifetime`, `turn_allow_guests`): what /voip/turnServer
hands clients for 1:1 calls (homeserver/client/voip.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.config.accounts_model import TurnConfig
from homeserver.config.reader import Reader
from homeserver.config.registration_checks import read_secret
from homeserver.config.values import parse_duration_ms

TURN_KEYS = (
    "turn_uris",
    "turn_shared_secret",
    "turn_shared_secret_path",
    "turn_username",
    "turn_password",
    "turn_user_lifetime",
    "turn_allow_guests",
)


def read_turn(r: Reader, top: Mapping[str, Any]) -> TurnConfig:
    uris = tuple(r.str_list(top, "turn_uris", "") or ())
    for uri in uris:
        if not uri.startswith(("turn:", "turns:", "stun:", "stuns:")):
            r.problem("turn_uris", f"expected turn: or turns: URIs, got {uri!r}")
    config = TurnConfig(
        uris=uris,
        shared_secret=read_secret(r, top, "turn_shared_secret"),
        username=r.str(top, "turn_username", ""),
        password=r.str(top, "turn_password", ""),
        user_lifetime_ms=r.converted(top, "turn_user_lifetime", "", 3_600_000, parse_duration_ms),
        allow_guests=r.bool(top, "turn_allow_guests", "", True),
    )
    has_credentials = config.shared_secret or (config.username and config.password)
    if uris and not has_credentials:
        r.problem("turn_uris", "needs turn_shared_secret (or turn_username and turn_password)")
    if config.user_lifetime_ms < 1000 and uris:
        r.problem("turn_user_lifetime", "must be at least a second")
    return config
