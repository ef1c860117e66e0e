"""Account creation: username rules and availability, the registration UIA flows, and
creating the user (then, unless inhibited, its first session).

Used by POST /register (after UIA) and by the shared-secret admin API.
"""

from __future__ import annotations

import time
from typing import Any

from homeserver.accounts import tokens
from homeserver.accounts.passwords import PasswordHasher
from homeserver.accounts.registration_stages import RECAPTCHA, TERMS
from homeserver.accounts.sessions import SessionService
from homeserver.accounts.uia import DUMMY, EMAIL_IDENTITY, REGISTRATION_TOKEN
from homeserver.config import RegistrationConfig
from homeserver.errors import MatrixError
from homeserver.ids import MAX_ID_LENGTH, check_new_localpart
from homeserver.storage import AccountStore
from homeserver.storage.account_auth import AccountAuthStore
from homeserver.storage.user_consent import ConsentStore


def invalid_username(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_USERNAME", message)


def user_in_use() -> MatrixError:
    return MatrixError(400, "M_USER_IN_USE", "User ID already taken.")


class RegistrationService:
    def __init__(
        self,
        config: RegistrationConfig,
        server_name: str,
        accounts: AccountStore,
        auth_store: AccountAuthStore,
        hasher: PasswordHasher,
        sessions: SessionService,
        consent: ConsentStore | None = None,
    ) -> None:
        self._consent = consent
        self._config = config
        self._server_name = server_name
        self._accounts = accounts
        self._auth_store = auth_store
        self._hasher = hasher
        self._sessions = sessions

    @property
    def flows(self) -> list[list[str]]:
        """The UIA flows POST /register offers (Synapse's order): a token when required,
        a captcha when configured, then nothing more or (with an `email` section) a
        validated address (the only way when required), then accepting the policy."""
        config = self._config
        base = [REGISTRATION_TOKEN] if config.requires_token else []
        if config.captcha is not None:
            base.append(RECAPTCHA)
        if config.requires_email:
            middles = [[EMAIL_IDENTITY]]
        else:
            middles = [[], [EMAIL_IDENTITY]] if config.offers_email else [[]]
        consent = config.consent
        terms = [TERMS] if consent is not None and consent.require_at_registration else []
        return [[*base, *middle, *terms] or [DUMMY] for middle in middles]

    async def record_consent(self, user_id: str, version: str | None) -> None:
        """The user accepted this version of the policy (the m.login.terms stage)."""
        if version is not None and self._consent is not None:
            await self._consent.record(user_id, version, int(time.time() * 1000))

    def user_id_for(self, username: str) -> str:
        """The user ID a requested username maps to (lower-cased), or M_INVALID_USERNAME."""
        localpart = username.lower()
        try:
            check_new_localpart(localpart)
        except ValueError as exc:
            raise invalid_username(str(exc)) from None
        if localpart.isdigit():
            raise invalid_username("Numeric user IDs are reserved")
        user_id = f"@{localpart}:{self._server_name}"
        if len(user_id.encode("utf-8")) > MAX_ID_LENGTH:
            raise invalid_username(f"User ID may not be longer than {MAX_ID_LENGTH} characters")
        return user_id

    async def check_requested(self, username: str) -> str:
        """A username a person asks for (POST /register, /register/available): valid,
        not `_`-prefixed (reserved for bridges, as in Synapse, unless
        allow_underscore_prefixed_registration), and free, except that with
        inhibit_user_in_use_error a taken name is not revealed until registration
        completes (no probing which accounts exist)."""
        user_id = self.user_id_for(username)
        if username.startswith("_") and not self._config.allow_underscore_prefix:
            raise invalid_username("User ID may not begin with _")
        if not self._config.inhibit_user_in_use_error:
            await self.check_available(username)
        return user_id

    async def check_available(self, username: str) -> str:
        """The user ID if `username` is valid and free (M_INVALID_USERNAME/M_USER_IN_USE)."""
        user_id = self.user_id_for(username)
        if await self._accounts.user_id_taken(user_id):
            raise user_in_use()
        return user_id

    async def registration_token_valid(self, token: str) -> bool:
        return await self._auth_store.registration_token_usable(token)

    async def register(
        self,
        *,
        username: str | None,
        password: str | None,
        device_id: str | None = None,
        display_name: str | None = None,
        inhibit_login: bool = False,
        refreshable: bool = False,
        admin: bool = False,
        registration_token: str | None = None,
        displayname: str | None = None,
    ) -> dict[str, Any]:
        """Create the account (and a session unless `inhibit_login`); the response body."""
        password_hash = await self._hasher.hash(password) if password is not None else None
        if username is not None:
            user_id = await self.check_available(username)
            created = await self._accounts.create_user(
                user_id,
                password_hash,
                is_admin=admin,
                displayname=displayname or username.lower(),
                user_type=self._config.default_user_type,  # user_types
            )
            if not created:
                raise user_in_use()
        else:
            user_id = await self._create_generated(password_hash, admin, displayname)
        if registration_token is not None:
            await self._auth_store.complete_registration_token(registration_token)
        return await self._answer(user_id, device_id, display_name, inhibit_login, refreshable)

    async def _answer(
        self,
        user_id: str,
        device_id: str | None,
        display_name: str | None,
        inhibit_login: bool,
        refreshable: bool,
    ) -> dict[str, Any]:
        """The registration answer: the user ID, and a first session unless inhibited."""
        if inhibit_login:
            return {"user_id": user_id, "home_server": self._server_name}
        session = await self._sessions.create_session(
            user_id, device_id, display_name, refreshable=refreshable
        )
        return session.to_json(self._server_name)

    async def register_guest(
        self, *, device_id: str | None, display_name: str | None, refreshable: bool
    ) -> dict[str, Any]:
        """A guest account (`kind=guest`, no UIA): a numeric user ID, reserved for guests
        as in Synapse (registration refuses numeric usernames), no password, no profile
        display name; its first session."""
        if not self._config.allow_guest_access:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
        for _ in range(10):
            user_id = f"@{tokens.numeric_localpart()}:{self._server_name}"
            if await self._accounts.create_user(user_id, None, is_guest=True):
                break
        else:
            raise MatrixError(500, "M_UNKNOWN", "Could not generate a free user ID")
        session = await self._sessions.create_session(
            user_id, device_id, display_name, refreshable=refreshable
        )
        return session.to_json(self._server_name)

    async def guest_to_upgrade(self, guest_user_id: str | None, username: str | None) -> str:
        """The guest's user ID when `/register` carries a guest's access token (the
        spec's upgrade): the username, if given, must be the guest's own localpart."""
        if guest_user_id is None:
            raise MatrixError(403, "M_FORBIDDEN", "Invalid guest access token")
        user = await self._accounts.get_user(guest_user_id)
        localpart = guest_user_id[1:].partition(":")[0]
        if user is None or not user.is_guest or (username not in (None, localpart)):
            raise MatrixError(
                403,
                "M_FORBIDDEN",
                "Cannot register taken user ID without valid guest credentials for that user",
            )
        return guest_user_id

    async def upgrade_guest(
        self,
        user_id: str,
        *,
        password: str | None,
        device_id: str | None,
        display_name: str | None,
        inhibit_login: bool,
        refreshable: bool,
    ) -> dict[str, Any]:
        """Turn the guest into a full user with the same ID; a new session unless
        inhibited (the guest's own tokens stay valid, now a full user's)."""
        password_hash = await self._hasher.hash(password) if password is not None else None
        if not await self._accounts.upgrade_guest(user_id, password_hash):
            raise MatrixError(403, "M_FORBIDDEN", "This account is not a guest any more")
        return await self._answer(user_id, device_id, display_name, inhibit_login, refreshable)

    async def _create_generated(
        self, password_hash: str | None, admin: bool, displayname: str | None
    ) -> str:
        for _ in range(10):
            localpart = tokens.localpart()
            user_id = f"@{localpart}:{self._server_name}"
            if await self._accounts.create_user(
                user_id,
                password_hash,
                is_admin=admin,
                displayname=displayname or localpart,
                user_type=self._config.default_user_type,
            ):
                return user_id
        raise MatrixError(500, "M_UNKNOWN", "Could not generate a free user ID")
