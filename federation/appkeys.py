"""Typed app state read by the federation adapter's inbound handlers.

Set by the composition module (homeserver/composition.py) once the app starts. Like
homeserver.appstate, a key exists only for something a handler (or a test) reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from federation.client import FederationClient
    from federation.inbound import InboundChecks
    from federation.keyring import Keyring
    from federation.keys import ServerKeys
    from federation.queries import FederationQueries
    from federation.receiver import TransactionReceiver
    from federation.sender import FederationSender
    from federation.server.origin_limits import OriginLimiter
    from homeserver.rooms.federated_membership import FederatedMembership
    from homeserver.rooms.room_state import RoomState

# Our signing keys and key document (/_matrix/key/v2/server).
SERVER_KEYS: web.AppKey[ServerKeys] = web.AppKey("server_keys")
# Remote server keys: fetch, cache, verify signed JSON (X-Matrix, the notary API).
KEYRING: web.AppKey[Keyring] = web.AppKey("fed_keyring")
# Checks 1-3 (format, signatures, content hash) of every event a peer hands us.
INBOUND: web.AppKey[InboundChecks] = web.AppKey("fed_inbound")
# rc_federation: per-origin limits on inbound requests (None: rate limits off).
ORIGIN_LIMITS: web.AppKey[OriginLimiter | None] = web.AppKey("fed_origin_limits")
# /send transactions: PDUs to the room service, EDUs to their services.
TRANSACTIONS: web.AppKey[TransactionReceiver] = web.AppKey("fed_transactions")
# The room service's policy for make/send join, leave, knock and invites.
FEDERATED_MEMBERSHIP: web.AppKey[FederatedMembership] = web.AppKey("fed_membership")
# State at points of the graph (state_ids, state, event_auth answers).
ROOM_STATE: web.AppKey[RoomState] = web.AppKey("fed_room_state")
# Read by tests: the outbound client, sender and queries of a running server.
FED_CLIENT: web.AppKey[FederationClient] = web.AppKey("fed_client")
SENDER: web.AppKey[FederationSender] = web.AppKey("fed_sender")
QUERIES: web.AppKey[FederationQueries] = web.AppKey("fed_queries")
