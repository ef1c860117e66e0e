"""Typed app state owned by the federation adapter.

Set by `federation.wiring`'s cleanup_ctx; read by the inbound handlers (and by the
outbound sender, which adds its own keys here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from federation.client import FederationClient
from federation.inbound import InboundChecks
from federation.keyring import Keyring
from homeserver.rooms.ingest import RemoteEventIngest

# Remote server keys: fetch, cache, verify signed JSON.
KEYRING = web.AppKey("fed_keyring", Keyring)
# Signed outbound requests to other servers.
FED_CLIENT = web.AppKey("fed_client", FederationClient)
# Checks 4-6 and persistence of events from other servers (the room service).
INGEST = web.AppKey("fed_ingest", RemoteEventIngest)
# Checks 1-3 (format, signatures, content hash) run before INGEST.
INBOUND = web.AppKey("fed_inbound", InboundChecks)

# EDU type -> handler(origin, content). Areas may add handlers for further EDU types.
EduHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
EDU_HANDLERS: web.AppKey[dict[str, EduHandler]] = web.AppKey("fed_edu_handlers")
