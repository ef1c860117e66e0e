"""Binding a user's 3PIDs at identity servers (POST /account/3pid/bind and /unbind),
and unbinding them all when the account is deactivated.

The identity server holds the binding; we remember which identity servers hold one
for each user (storage/threepid_binds.py), because deactivation must ask each of them
to forget it and the user does not name them then.
"""

from __future__ import annotations

import logging

from homeserver.errors import MatrixError
from homeserver.storage.threepid_binds import ThreepidBindStore

from .identity import IdentityServerError, IdentityServers

log = logging.getLogger(__name__)


class IdentityBinds:
    def __init__(self, identity: IdentityServers, store: ThreepidBindStore) -> None:
        self._identity = identity
        self._store = store

    async def bind(
        self, user_id: str, id_server: str, id_access_token: str, sid: str, client_secret: str
    ) -> None:
        """Have `id_server` bind the 3PID it validated in session `sid` to the user."""
        try:
            answer = await self._identity.bind(
                id_server, id_access_token, sid, client_secret, user_id
            )
        except IdentityServerError as e:
            log.info("bind for %s at %s failed: %s", user_id, id_server, e)
            raise MatrixError(400, "M_UNKNOWN", "The identity server refused the binding") from None
        medium, address = answer.get("medium"), answer.get("address")
        if answer.get("mxid") not in (None, user_id):
            raise MatrixError(400, "M_UNKNOWN", "The identity server bound another user")
        if isinstance(medium, str) and isinstance(address, str):
            await self._store.add(user_id, medium[:32], address[:512], id_server)

    async def unbind(self, user_id: str, medium: str, address: str, id_server: str | None) -> bool:
        """Ask the identity server(s) holding the binding to forget it: `id_server`,
        or every one we know of. False when none did (or we know of none)."""
        servers = (
            [id_server]
            if id_server is not None
            else [b.id_server for b in await self._store.for_user(user_id, medium, address)]
        )
        if not servers:
            return False
        ok = True
        for server in servers:
            done = await self._identity.unbind(server, user_id, medium, address)
            ok = ok and done
            await self._store.remove(user_id, medium, address, server)
        return ok

    async def unbind_all(self, user_id: str) -> bool:
        """Deactivation: unbind every binding we made; True when all succeeded."""
        ok = True
        for bind in await self._store.for_user(user_id):
            done = await self._identity.unbind(bind.id_server, user_id, bind.medium, bind.address)
            ok = ok and done
            await self._store.remove(user_id, bind.medium, bind.address, bind.id_server)
        return ok
