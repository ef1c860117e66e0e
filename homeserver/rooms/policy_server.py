"""Asking a room's Policy Server (spec v1.18) before an event goes anywhere.

Local events: built and signed by us, then, when the room uses a Policy Server, sent
to it (`POST /_matrix/policy/v1/sign`) and sent on only with its valid signature;
its refusal reaches the client verbatim (400 M_FORBIDDEN with its reason, say), and a
Policy Server that does not answer in POLICY_TIMEOUT_S fails the send with 502.
Events from other servers without a valid signature are asked for one once, and soft
failed if they still have none (they stay in the graph, out of timelines).

Whether a room uses one is read from the state the event is built on (ours) or the
current state (theirs): a valid `m.room.policy` event with an empty state key, and a
joined user of the `via` server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from homeserver.errors import MatrixError
from homeserver.events import Event
from homeserver.events.policy import (
    POLICY_KEY_ID,
    POLICY_TYPE,
    PolicyConfig,
    needs_policy_signature,
    parse_policy,
    policy_signature_valid,
)
from homeserver.storage import Stores

log = logging.getLogger(__name__)

POLICY_TIMEOUT_S = 10.0
# A Policy Server that did not answer is not asked again for this long: events for its
# rooms fail (ours) or soft fail (theirs) at once, instead of each holding the room's
# write lock for POLICY_TIMEOUT_S (a peer could otherwise stall a room by sending
# unsigned events while the Policy Server is slow). At most MAX_DOWN servers remembered.
DOWN_FOR_S = 30.0
MAX_DOWN = 1000
StateKey = tuple[str, str]


class PolicyServerPort(Protocol):
    async def ask_to_sign(self, via: str, pdu: dict[str, Any]) -> Any:
        """The Policy Server's answer (its signatures object); MatrixError with its own
        status and errcode when it refuses; any other exception when unreachable."""


class PolicyServers:
    def __init__(self, stores: Stores, port: PolicyServerPort | None) -> None:
        self._stores = stores
        self._port = port
        self._down_until: dict[str, float] = {}  # via -> monotonic time

    async def config_for(self, room_id: str, state: Mapping[StateKey, str]) -> PolicyConfig | None:
        """The room's Policy Server, if the state names a valid one that is joined."""
        event_id = state.get((POLICY_TYPE, ""))
        if event_id is None:
            return None
        event = await self._stores.events.get_event(event_id)
        config = parse_policy(event.content) if event is not None else None
        if config is None:
            return None
        if config.via not in await self._stores.current_state.get_joined_hosts(room_id):
            return None
        return config

    async def cosign(self, event: Event, state: Mapping[StateKey, str]) -> Event:
        """`event` with the Policy Server's signature added (unchanged when the room
        has none); raises what the Policy Server answered, or 502 without an answer."""
        if not needs_policy_signature(event.type, event.state_key):
            return event
        config = await self.config_for(event.room_id, state)
        if config is None:
            return event
        signed = await self._ask(event, config)
        if signed is None:
            raise MatrixError(502, "M_UNKNOWN", "The room's policy server did not sign the event")
        return signed

    async def recommended(self, event: Event, state: Mapping[StateKey, str]) -> bool:
        """Whether another server's event may go on: no Policy Server in the room, a
        valid signature, or a valid one the Policy Server gives now."""
        if not needs_policy_signature(event.type, event.state_key):
            return True
        config = await self.config_for(event.room_id, state)
        if config is None or policy_signature_valid(event.pdu, event.room_version, config):
            return True
        try:
            return await self._ask(event, config) is not None
        except MatrixError:
            return False

    async def _ask(self, event: Event, config: PolicyConfig) -> Event | None:
        """The event with a valid Policy Server signature, or None (unreachable, or a
        signature that does not verify). A refusal is raised as the server gave it."""
        if self._port is None:
            return None
        loop = asyncio.get_running_loop()
        if self._down_until.get(config.via, 0.0) > loop.time():
            return None
        pdu = {k: v for k, v in event.pdu.items() if k != "unsigned"}
        try:
            answer = await asyncio.wait_for(
                self._port.ask_to_sign(config.via, pdu), POLICY_TIMEOUT_S
            )
        except MatrixError:
            raise
        except Exception as exc:  # unreachable, timed out, garbled
            log.info("policy server %s for %s: %s", config.via, event.room_id, exc)
            if len(self._down_until) >= MAX_DOWN:
                self._down_until.clear()
            self._down_until[config.via] = loop.time() + DOWN_FOR_S
            return None
        mine = answer.get(config.via) if isinstance(answer, dict) else None
        signature = mine.get(POLICY_KEY_ID) if isinstance(mine, dict) else None
        if not isinstance(signature, str):
            return None
        # Keep every signature already there (the Policy Server may share a name with
        # the event's origin and return only its own).
        signatures = {k: dict(v) for k, v in (event.pdu.get("signatures") or {}).items()}
        signatures.setdefault(config.via, {})[POLICY_KEY_ID] = signature
        signed = Event({**event.pdu, "signatures": signatures}, event.room_version, event.event_id)
        if not policy_signature_valid(signed.pdu, signed.room_version, config):
            return None
        return signed
