"""The identity part of the wiring: 3PID binds, third-party invites, and the email
addresses we validate ourselves (mail, the UIA stage, what deactivation forgets).

Split from composition.py (which must stay readable): the identity server client goes
through the same outbound IP policy as federation, and the third-party invite service
gets federation's invite exchange when this process federates.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from homeserver.accounts.identity import IdentityServers
from homeserver.accounts.identity_binds import IdentityBinds
from homeserver.accounts.mailer import Mailer
from homeserver.accounts.threepids import ThreepidService
from homeserver.accounts.uia import EMAIL_IDENTITY, UserInteractiveAuth
from homeserver.background import BackgroundTasks
from homeserver.config import Config
from homeserver.ipfilter import outbound_ip_filter
from homeserver.push.email_notifier import EmailNotifier
from homeserver.rooms.local_events import LocalEvents
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.third_party_invites import InviteExchange, ThirdPartyInvites
from homeserver.storage import Stores
from homeserver.storage.database import Database
from homeserver.storage.email_notifications import EmailNotificationStore
from homeserver.storage.push import PushStore
from homeserver.storage.threepid_binds import ThreepidBindStore
from homeserver.storage.threepids import ThreepidStore


@dataclass(frozen=True)
class Identity:
    config: Config
    database: Database
    stores: Stores
    binds: IdentityBinds
    invites: ThirdPartyInvites
    threepids: ThreepidService
    mailer: Mailer | None  # one for the whole process: its bound on SMTP conversations

    def start(self, uia: UserInteractiveAuth, push: PushStore, tasks: BackgroundTasks) -> None:
        """With mail: the UIA stage of a mailed session, and (on the main, with
        enable_notifs) the email notifications."""
        email = self.config.threepids.email
        if email is None or self.mailer is None:
            return
        uia.add_stage(EMAIL_IDENTITY, self.threepids.uia_stage)
        if email.enable_notifs and not self.config.workers.is_worker:
            notifier = EmailNotifier(
                self.stores,
                push,
                EmailNotificationStore(self.database),
                self.mailer,
                self.config.server_name,
                delay_ms=email.notif_delay_ms,
                client_base_url=email.client_base_url,
                include_content=self.config.push.include_content,
            )
            tasks.spawn(notifier.run(), "email notifications")

    async def forget_user(self, user_id: str) -> bool:
        """Deactivation: the account's addresses are free again here, and identity
        servers forget its bindings (True when every one did)."""
        await self.threepids.remove_all(user_id)
        return await self.binds.unbind_all(user_id)


def build_identity(
    config: Config,
    database: Database,
    stores: Stores,
    membership: MembershipService,
    local_events: LocalEvents,
    signing_key: Any,
    exchange: InviteExchange | None,
    stack: AsyncExitStack,
) -> Identity:
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
    email = config.threepids.email
    mailer = Mailer(email) if email is not None else None
    threepids = ThreepidService(
        config.threepids,
        config.server_name,
        config.public_baseurl,
        ThreepidStore(database),
        mailer,
    )
    return Identity(config, database, stores, binds, invites, threepids, mailer)
