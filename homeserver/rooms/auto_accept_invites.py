"""Synapse's `auto_accept_invites`: when a local user is invited, the server joins the
room for them (operators of bots, bridges and kiosk-like deployments want members to
be in rooms without a client clicking "accept").

Which invites, as Synapse decides (config/auto_accept.py for the keys):
- a member event with membership `invite` whose target is one of our users, sent by
  someone else (nobody invites themselves; such an event is never acted on);
- `only_for_direct_messages`: only when the invite says `is_direct: true`;
- `only_from_local_users`: only when the inviter is one of our users;
- the invitee exists, is not deactivated, suspended or locked (an account an admin has
  stopped must not start joining rooms);
- an invite marked `is_direct` also adds the room to the invitee's `m.direct` account
  data under the inviter, so their clients list it as a direct chat.

Where invites are heard: an event listener on the main, once per deployment (composition's
`singletons`, replication/writers.py). It hears the room graph (invites in rooms we are
in, local or arriving by /send) and, flagged by `hears_out_of_band`, the out-of-band
memberships too: an invite from a server whose room we are not in arrives by
federation /invite and is stored outside any room graph (rooms/persister.py
`persist_out_of_band_membership`). `worker_to_run_on` is read for Synapse's files, but
the main runs this whatever it names (our other once-per-deployment jobs run there too):
two processes accepting one invite would make two joins.

The join retries, as Synapse's does: after a remote invite the inviting server stores
its invite only once our /invite answer reached it, so an immediate make_join can be
refused; five attempts, 0, 1, 2, 4 and 8 seconds apart. Before each attempt the invite
must still be the user's membership: a user who rejected it (or joined) meanwhile is
left as they chose.

Bounds: at most MAX_PENDING invites are being accepted (waiting between attempts
included), at most MAX_PENDING_PER_SERVER of them sent by one other server's users (a
hostile server inviting our users in a flood fills its own share, not everyone's), and
at most MAX_CONCURRENT_JOINS join handshakes run at once. An invite beyond a bound is
left for the user to accept, with a warning in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from homeserver.background import BackgroundTasks
from homeserver.config import Config
from homeserver.config.auto_accept import AutoAcceptInvitesConfig
from homeserver.config.workers import MAIN
from homeserver.ephemeral.account_data import AccountDataService
from homeserver.errors import MatrixError
from homeserver.events import Event
from homeserver.moderation import Moderation
from homeserver.rooms.ports import EventListener
from homeserver.storage import Stores
from homeserver.storage.room_directory import RoomReadStore

log = logging.getLogger(__name__)

# Pending-queue limit: invites being accepted at once, their waits between attempts
# included (each is one small task; beyond it an invite is left for the user).
MAX_PENDING = 1_000
# Of those, invites sent by the users of one other server.
MAX_PENDING_PER_SERVER = 100
# Join handshakes (make_join/send_join to another server, or a local join) at once.
MAX_CONCURRENT_JOINS = 8
# Synapse's schedule: the first attempt at once, then waits doubling from 1 s.
RETRY_DELAYS_S: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)
DIRECT = "m.direct"


class Joiner(Protocol):
    """The membership service's join (rooms/membership.py), all this module needs."""

    async def join(
        self,
        room_id: str,
        user_id: str,
        servers: list[str] | None = None,
        reason: str | None = None,
        txn: tuple[str, str | None, str] | None = None,
        guest: bool = False,
    ) -> Any: ...


class InviteAutoAccepter:
    """An event listener (rooms.ports.EventListener) of the room graph and of
    out-of-band memberships."""

    hears_out_of_band = True  # replication/writers.py: told of out-of-band invites too

    def __init__(
        self,
        settings: AutoAcceptInvitesConfig,
        stores: Stores,
        account_data: AccountDataService,
        read_store: RoomReadStore,
        moderation: Moderation | None,
        server_name: str,
        tasks: BackgroundTasks,
        membership: Callable[[], Joiner],
        delays: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        """`membership`: gives the membership service, which is built after the
        persister this listens to (asked for only when a join starts)."""
        self._settings = settings
        self._stores = stores
        self._account_data = account_data
        self._read = read_store
        self._moderation = moderation
        self._server_name = server_name
        self._tasks = tasks
        self._membership = membership
        self._delays = tuple(delays)
        self._pending: set[tuple[str, str]] = set()  # (room, invitee)
        self._per_server: Counter[str] = Counter()
        self._joins = asyncio.Semaphore(MAX_CONCURRENT_JOINS)

    def _is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self._server_name

    def on_new_event(self, event: Event, stream_ordering: int) -> None:
        if stream_ordering <= 0 or event.type != "m.room.member":
            return  # history (backfill) is no invite happening now
        invitee, inviter = event.state_key, event.sender
        if not invitee or event.content.get("membership") != "invite":
            return
        if not self._is_local(invitee) or inviter == invitee:
            return
        is_direct = event.content.get("is_direct") is True
        if self._settings.only_for_direct_messages and not is_direct:
            return
        if self._settings.only_from_local_users and not self._is_local(inviter):
            return
        key = (event.room_id, invitee)
        if key in self._pending:
            return  # already being accepted (the invite heard twice, or re-sent)
        server = inviter.partition(":")[2]
        if len(self._pending) >= MAX_PENDING or (
            server != self._server_name and self._per_server[server] >= MAX_PENDING_PER_SERVER
        ):
            log.warning("auto_accept_invites is behind: %s's invite to %s waits", invitee, key[0])
            return
        try:
            self._tasks.spawn(self._accept(event, is_direct), name="auto-accept-invite")
        except RuntimeError:  # shutting down: the invite stays for the user
            return
        self._pending.add(key)
        self._per_server[server] += 1

    async def _accept(self, invite: Event, is_direct: bool) -> None:
        room_id, invitee, inviter = invite.room_id, invite.state_key or "", invite.sender
        server = inviter.partition(":")[2]
        try:
            user = await self._stores.accounts.get_user(invitee)
            if user is None or user.deactivated or self._stopped(invitee):
                return
            if is_direct:
                await self._mark_direct(invitee, inviter, room_id)
            await self._join(room_id, invitee, server, user.is_guest)
        finally:
            self._pending.discard((room_id, invitee))
            self._per_server[server] -= 1
            if self._per_server[server] <= 0:
                del self._per_server[server]

    def _stopped(self, user_id: str) -> bool:
        """Suspended or locked by an admin."""
        moderation = self._moderation
        return moderation is not None and (
            moderation.is_suspended(user_id) or moderation.is_locked(user_id)
        )

    async def _mark_direct(self, user_id: str, other: str, room_id: str) -> None:
        """Add the room to the user's `m.direct` under `other` (read and written in one
        transaction: a client's own m.direct change at the same time is not lost)."""

        def add(content: dict[str, Any] | None) -> dict[str, Any] | None:
            rooms = (content or {}).get(other)
            rooms = list(rooms) if isinstance(rooms, list) else []
            if room_id in rooms:
                return None
            return {**(content or {}), other: [*rooms, room_id]}

        try:
            await self._account_data.modify(user_id, DIRECT, add)
        except Exception:
            log.exception("could not add %s to %s's m.direct", room_id, user_id)

    async def _join(self, room_id: str, user_id: str, server: str, guest: bool) -> None:
        via = [server] if server != self._server_name else []
        for attempt, delay in enumerate(self._delays, start=1):
            await asyncio.sleep(delay)
            membership = await self._stores.current_state.get_membership(room_id, user_id)
            if membership != "invite":
                return  # accepted, rejected or withdrawn meanwhile
            try:
                async with self._joins:
                    await self._membership().join(room_id, user_id, via, guest=guest)
            except MatrixError as e:
                # 403 is expected at first for a remote invite (see the module's doc).
                level = logging.DEBUG if e.status == 403 else logging.WARNING
                log.log(level, "auto-accept %s in %s, attempt %d: %s", user_id, room_id, attempt, e)
                continue
            except Exception:
                log.warning(
                    "auto-accept %s in %s, attempt %d", user_id, room_id, attempt, exc_info=True
                )
                continue
            await self._read.unforget_room(user_id, room_id)  # as a client's /join does
            return
        log.info("could not accept %s's invite to %s: it waits for them", user_id, room_id)


def auto_accept(
    config: Config,
    stores: Stores,
    account_data: AccountDataService,
    moderation: Moderation | None,
    tasks: BackgroundTasks,
    membership: Callable[[], Joiner],
) -> list[EventListener]:
    """The listener when the operator enabled it (composition's singletons)."""
    settings = config.auto_accept_invites
    if not settings.enabled:
        return []
    if (settings.worker_to_run_on or MAIN) != MAIN and config.workers.worker_name == MAIN:
        log.info(
            "auto_accept_invites: worker_to_run_on is %r; invites are accepted on the main",
            settings.worker_to_run_on,
        )
    return [
        InviteAutoAccepter(
            settings,
            stores,
            account_data,
            RoomReadStore(stores.db),
            moderation,
            config.server_name,
            tasks,
            membership,
        )
    ]
