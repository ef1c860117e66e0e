"""The identity-server part of the wiring: 3PID binds and third-party invites.

Split from composition.py (which must stay readable): the identity server client goes
through the same outbound IP policy as federation, and the third-party invite service
gets federation's invite exchange when this process federates.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from homeserver.accounts.identity import IdentityServers
from homeserver.accounts.identity_binds import IdentityBinds
from homeserver.config import Config
from homeserver.ipfilter import outbound_ip_filter
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.third_party_invites import InviteExchange, ThirdPartyInvites
from homeserver.storage import Stores
from homeserver.storage.database import Database
from homeserver.storage.threepid_binds import ThreepidBindStore


def build_identity(
    config: Config,
    database: Database,
    stores: Stores,
    membership: MembershipService,
    local_events: LocalEvents,
    signing_key: Any,
    exchange: InviteExchange | None,
    stack: AsyncExitStack,
) -> tuple[IdentityBinds, ThirdPartyInvites]:
    fed = config.federation
    identity = IdentityServers(
        outbound_ip_filter(fed),
        config.server_name,
        signing_key,
        plain_http=fed.plain_http_for_tests,
    )
    stack.push_async_callback(identity.close)
    binds = IdentityBinds(identity, ThreepidBindStore(database))
    invites = ThirdPartyInvites(
        stores, membership, local_events, identity, config.server_name, exchange
    )
    return binds, invites
