"""Signing in with a JSON Web Token (`org.matrix.login.jwt`, Synapse's jwt_config).

A portal the operator trusts signs a token naming the user (its subject claim is the
localpart); the token must be signed with the configured key and algorithm (no
other algorithm is accepted: no "none", no HMAC keyed by a public key), unexpired and
not before its time, from the issuer and for an audience when those are configured.
A user who does not exist yet is created (no password; the display name from the
token when configured), as Synapse does.
"""

from __future__ import annotations

from typing import Any

from homeserver.accounts.registration import RegistrationService
from homeserver.accounts.sessions import Session, SessionService
from homeserver.config.jwt_login import JwtLoginConfig
from homeserver.errors import MatrixError, forbidden
from homeserver.storage import AccountStore

LOGIN_TYPE = "org.matrix.login.jwt"
MAX_TOKEN_LENGTH = 8192


class JwtLogin:
    def __init__(
        self,
        config: JwtLoginConfig,
        accounts: AccountStore,
        registration: RegistrationService,
        sessions: SessionService,
    ) -> None:
        self._config = config
        self._accounts = accounts
        self._registration = registration
        self._sessions = sessions

    def _claims(self, token: str) -> dict[str, Any]:
        import jwt

        config = self._config
        try:
            claims = jwt.decode(
                token,
                config.secret,
                algorithms=[config.algorithm],
                audience=list(config.audiences) or None,
                issuer=config.issuer,
                options={"require": ["iss"] if config.issuer else []},
            )
        except jwt.PyJWTError as exc:
            raise forbidden(f"JWT validation failed: {exc}") from None
        if not isinstance(claims, dict):
            raise forbidden("JWT validation failed: not a claims object")
        return claims

    async def login(
        self, token: str, *, device_id: str | None, display_name: str | None, refreshable: bool
    ) -> Session:
        if len(token) > MAX_TOKEN_LENGTH:
            raise forbidden("JWT validation failed: too long")
        claims = self._claims(token)
        subject = claims.get(self._config.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise forbidden("Invalid JWT: no subject")
        user_id = self._registration.user_id_for(subject)
        if await self._accounts.get_user(user_id) is None:
            name_claim = self._config.display_name_claim
            name = claims.get(name_claim) if name_claim else None
            try:
                await self._registration.register(
                    username=subject,
                    password=None,
                    inhibit_login=True,
                    displayname=name if isinstance(name, str) and len(name) <= 256 else None,
                )
            except MatrixError as exc:
                if exc.errcode != "M_USER_IN_USE":  # a concurrent first login made it
                    raise
        return await self._sessions.login_verified(
            user_id, device_id=device_id, display_name=display_name, refreshable=refreshable
        )
