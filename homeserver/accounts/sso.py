"""Signing in with an identity provider (OpenID Connect, Synapse's `oidc_providers`).

`start` records a sign-in (state, nonce, PKCE verifier; bound to the browser that
started it by a cookie key, so a link started by someone else cannot sign a victim in
as them) and answers the provider's authorization URL. `finish` takes the sign-in
once, checks what the provider says (homeserver/accounts/oidc.py), and maps its
subject to our user: the user linked before, else (with `allow_existing_users`) the
user the localpart template names, else a new account (with the provider's
`enable_registration`), the localpart suffixed with a number when taken. For a
user-interactive auth session (an SSO user confirming who they are before deleting a
device, say), the session's m.login.sso stage is completed for that user instead.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from homeserver.accounts.auto_join import AutoJoin
from homeserver.accounts.oidc import OidcError, OidcProvider
from homeserver.accounts.sso_mapping import render, to_localpart
from homeserver.accounts.threepids import canonical_email
from homeserver.config import Config
from homeserver.config.accounts_model import OidcProviderConfig
from homeserver.errors import MatrixError
from homeserver.rooms.keyed_lock import KeyedLock
from homeserver.storage import AccountStore
from homeserver.storage.account_auth import AccountAuthStore
from homeserver.storage.sso import SsoSession, SsoStore
from homeserver.storage.threepids import ThreepidStore

log = logging.getLogger(__name__)

SSO = "m.login.sso"
SSO_SESSION_LIFETIME_MS = 10 * 60 * 1000
MAX_LOCALPART_ATTEMPTS = 100
MAX_REDIRECT_URL = 2048


def _now_ms() -> int:
    return int(time.time() * 1000)


class SsoError(Exception):
    """Why a sign-in failed, in words for the person in the browser."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class SignedIn:
    user_id: str
    client_redirect_url: str | None
    ui_auth_session: str | None


def check_redirect_url(url: str) -> str:
    """A client's redirectUrl: absolute (a web page, or an app's own scheme such as
    element://), no spaces or control characters."""
    scheme, sep, _rest = url.partition(":")
    if (
        not sep
        or not scheme
        or not scheme[0].isalpha()
        or len(url) > MAX_REDIRECT_URL
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url)
        or scheme.lower() in ("javascript", "data", "vbscript", "file")
    ):
        raise MatrixError(400, "M_INVALID_PARAM", "redirectUrl must be an absolute URL")
    return url


class SsoService:
    def __init__(
        self,
        config: Config,
        store: SsoStore,
        accounts: AccountStore,
        threepids: ThreepidStore,
        auth_store: AccountAuthStore,
        auto_join: AutoJoin | None = None,
    ) -> None:
        self._auto_join = auto_join
        self.providers = {p.idp_id: OidcProvider(p) for p in config.sso.providers}
        self._config = config
        self._store = store
        self._accounts = accounts
        self._threepids = threepids
        self._auth_store = auth_store
        self._per_subject = KeyedLock()
        self.callback_url = f"{config.public_baseurl or '/'}_synapse/client/oidc/callback"

    @property
    def enabled(self) -> bool:
        return bool(self.providers)

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()

    def login_flow(self) -> dict[str, Any]:
        """GET /login's m.login.sso entry (what Element draws its buttons from)."""
        providers = []
        for p in self.providers.values():
            entry = {"id": p.config.idp_id, "name": p.config.idp_name}
            if p.config.idp_icon:
                entry["icon"] = p.config.idp_icon
            if p.config.idp_brand:
                entry["brand"] = p.config.idp_brand
            providers.append(entry)
        return {"type": SSO, "identity_providers": providers}

    # -- the way out ---------------------------------------------------------------------

    async def start(
        self, idp_id: str, client_redirect_url: str | None, ui_auth_session: str | None
    ) -> tuple[str, str]:
        """(the provider's authorization URL, the browser key for the cookie)."""
        provider = self.providers.get(idp_id)
        if provider is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown identity provider")
        now = _now_ms()
        await self._store.delete_sessions_before(now - SSO_SESSION_LIFETIME_MS)
        verifier = secrets.token_urlsafe(48) if await self._uses_pkce(provider) else None
        session = SsoSession(
            state=secrets.token_urlsafe(24),
            idp_id=idp_id,
            browser_key=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            code_verifier=verifier,
            client_redirect_url=client_redirect_url,
            ui_auth_session=ui_auth_session,
            created_ts=now,
        )
        try:
            url = await provider.authorization_url(
                state=session.state,
                nonce=session.nonce,
                redirect_uri=self.callback_url,
                code_verifier=verifier,
            )
        except OidcError as exc:
            log.warning("SSO with %s cannot start: %s", idp_id, exc)
            raise MatrixError(502, "M_UNKNOWN", "The identity provider cannot be reached") from None
        await self._store.add_session(session)
        return url, session.browser_key

    async def _uses_pkce(self, provider: OidcProvider) -> bool:
        try:
            return await provider.uses_pkce()
        except OidcError as exc:
            log.warning("SSO with %s: discovery failed: %s", provider.config.idp_id, exc)
            raise MatrixError(502, "M_UNKNOWN", "The identity provider cannot be reached") from None

    # -- the way back --------------------------------------------------------------------

    async def finish(self, state: str, code: str, browser_key: str | None) -> SignedIn:
        session = await self._store.get_session(state)
        if session is None or session.created_ts + SSO_SESSION_LIFETIME_MS < _now_ms():
            raise SsoError("This sign-in has expired or was used already. Start again.")
        if browser_key is None or not secrets.compare_digest(browser_key, session.browser_key):
            raise SsoError("This sign-in was started in another browser. Start again here.")
        if not await self._store.take_session(state):
            raise SsoError("This sign-in has expired or was used already. Start again.")
        provider = self.providers.get(session.idp_id)
        if provider is None:
            raise SsoError("This identity provider is no longer configured.")
        try:
            claims = await provider.user_claims(
                code,
                nonce=session.nonce,
                redirect_uri=self.callback_url,
                code_verifier=session.code_verifier,
            )
        except OidcError as exc:
            log.warning("SSO with %s failed: %s", session.idp_id, exc)
            raise SsoError("The identity provider's answer could not be used.", 502) from None
        config = provider.config
        for attribute, value in config.attribute_requirements:
            found = claims.get(attribute)
            ok = (
                found is not None
                if value is None
                else (found == value or (isinstance(found, list) and value in found))
            )
            if not ok:
                raise SsoError("Your account there may not sign in here.", 403)
        subject = claims.get(config.subject_claim)
        if not isinstance(subject, (str, int)) or isinstance(subject, bool) or subject == "":
            raise SsoError("The identity provider did not say who you are.", 502)
        ui = session.ui_auth_session
        # One sign-in per subject at a time: two first sign-ins racing (two tabs) would
        # otherwise both make an account (the callback is served by the main only).
        async with self._per_subject.hold(f"{config.idp_id}\n{subject}"):
            user_id = await self._user_for(
                config, str(subject), claims, existing_only=ui is not None
            )
        if ui is not None:
            done = await self._auth_store.complete_uia_stage(ui, SSO, {"user_id": user_id})
            if done is None:
                raise SsoError("The request you were confirming has expired. Try it again.")
        return SignedIn(user_id, session.client_redirect_url, ui)

    async def _user_for(
        self,
        config: OidcProviderConfig,
        subject: str,
        claims: dict[str, Any],
        *,
        existing_only: bool,
    ) -> str:
        linked = await self._store.user_of(config.idp_id, subject)
        if linked is not None:
            user = await self._accounts.get_user(linked)
            if user is None or user.deactivated:
                raise SsoError("This account has been deactivated.", 403)
            return linked
        if existing_only:
            raise SsoError("This identity is not linked to your account.", 403)
        localpart = to_localpart(render(config.localpart_template, claims))
        if localpart is None:
            raise SsoError("The identity provider gave no usable username.", 502)
        server = self._config.server_name
        for attempt in range(MAX_LOCALPART_ATTEMPTS):
            user_id = f"@{localpart}{attempt or ''}:{server}"
            user = await self._accounts.get_user(user_id)
            if user is not None:
                if attempt == 0 and config.allow_existing_users:
                    if user.deactivated:
                        raise SsoError("This account has been deactivated.", 403)
                    return await self._link(config, subject, user_id)
                continue
            if not config.enable_registration:
                raise SsoError("There is no account for you here, and new ones are not made.", 403)
            display = (
                render(config.display_name_template, claims) if config.display_name_template else ""
            )
            if not await self._accounts.create_user(
                user_id, None, displayname=display[:256] or f"{localpart}{attempt or ''}"
            ):
                continue  # taken a moment ago
            await self._add_email(config, claims, user_id)
            linked = await self._link(config, subject, user_id)
            if self._auto_join is not None:
                await self._auto_join.new_user(linked)
            return linked
        raise SsoError("No free username was found for you.", 502)

    async def _link(self, config: OidcProviderConfig, subject: str, user_id: str) -> str:
        if not await self._store.link(config.idp_id, subject, user_id):
            linked = await self._store.user_of(config.idp_id, subject)
            assert linked is not None  # a concurrent first sign-in of the same subject
            return linked
        return user_id

    async def _add_email(
        self, config: OidcProviderConfig, claims: dict[str, Any], user_id: str
    ) -> None:
        if not config.email_template:
            return
        try:
            address = canonical_email(render(config.email_template, claims))
        except MatrixError:
            return
        now = _now_ms()
        await self._threepids.add(user_id, "email", address, now, now)  # unless someone's
