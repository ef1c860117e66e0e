"""User-interactive authentication (client-server API "User-Interactive Authentication").

Any endpoint that needs proof of identity calls one method:

    result = await uia.authenticate(
        body.get("auth"), [["m.login.password"]], uri=..., method=..., user_id=requester
    )

It returns once some flow is complete, and otherwise raises the spec's 401 answer
(`flows`, `params`, `session`, `completed`, plus `errcode`/`error` when a stage just
failed). Sessions live in the database (AccountAuthStore), bound to the endpoint they
were started on, and expire after SESSION_LIFETIME_MS. Stages are pluggable: each is an
async checker that returns facts to remember in the session or raises `StageFailed`.
Call `finish(result)` after the protected operation succeeded so the session cannot be
replayed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from homeserver.accounts import tokens
from homeserver.accounts.passwords import MAX_PASSWORD_LENGTH, PasswordHasher
from homeserver.errors import MatrixError, bad_json
from homeserver.storage import AccountStore
from homeserver.storage.account_auth import AccountAuthStore

PASSWORD = "m.login.password"
DUMMY = "m.login.dummy"
REGISTRATION_TOKEN = "m.login.registration_token"
EMAIL_IDENTITY = "m.login.email.identity"
SSO = "m.login.sso"

SESSION_LIFETIME_MS = 60 * 60 * 1000
MAX_SESSION_ID_LENGTH = 255

Flows = Sequence[Sequence[str]]


def _now_ms() -> int:
    return int(time.time() * 1000)


class StageFailed(Exception):
    """A stage's credentials were wrong: reported inside the 401 body."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


class UiaChallenge(MatrixError):
    """The 401 answer: the UIA fields, plus errcode/error only when a stage failed."""

    def __init__(self, fields: dict[str, Any], errcode: str | None, error: str | None) -> None:
        super().__init__(401, errcode or "M_UNAUTHORIZED", error or "Authentication required")
        self.fields = fields
        self.failed = errcode is not None

    def to_json(self) -> dict[str, Any]:
        body = dict(self.fields)
        if self.failed:
            body["errcode"] = self.errcode
            body["error"] = self.message
        return body


@dataclass(frozen=True)
class StageContext:
    """What a stage checker may know about the request being authorised."""

    user_id: str | None  # the account that must authenticate; None when registering
    session_data: dict[str, Any]
    uri: str = ""  # the endpoint the session is for, e.g. "/register"


@dataclass(frozen=True)
class UiaResult:
    session_id: str
    completed: list[str]
    data: dict[str, Any] = field(default_factory=dict)  # facts stages recorded


StageChecker = Callable[[dict[str, Any], StageContext], Awaitable[dict[str, Any]]]


class UserInteractiveAuth:
    def __init__(
        self,
        store: AccountAuthStore,
        accounts: AccountStore,
        hasher: PasswordHasher,
        server_name: str,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._hasher = hasher
        self._server_name = server_name
        self._has_sso_identity: Callable[[str], Awaitable[bool]] | None = None
        self._passwords = True
        self._session_timeout_ms = 0
        self._stages: dict[str, StageChecker] = {
            DUMMY: self._check_dummy,
            PASSWORD: self._check_password,
            REGISTRATION_TOKEN: self._check_registration_token,
        }

    def skip_within(self, session_timeout_ms: int) -> None:
        """ui_auth.session_timeout (Synapse's): an operation that allows it (deleting
        devices, one after another while tidying up) needs no new UIA within this
        long of the access token's last completed one (or of its login)."""
        self._session_timeout_ms = session_timeout_ms

    def disable_passwords(self) -> None:
        """password_config.enabled false: no password proves anything."""
        self._passwords = False

    def offer_sso(self, has_sso_identity: Callable[[str], Awaitable[bool]]) -> None:
        """Where a password proves who you are, a user linked to an identity provider
        may sign in there again instead (the only way for one without a password; as
        Synapse, each is offered what they have): its fallback page completes the
        stage (homeserver/client/sso.py)."""
        self._has_sso_identity = has_sso_identity
        self._stages[SSO] = self._check_sso

    async def _check_sso(self, auth: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        raise StageFailed("M_UNAUTHORIZED", "Sign in with your identity provider first")

    def add_stage(self, stage: str, checker: StageChecker) -> None:
        """Let another area offer its own stage type (e.g. m.login.sso)."""
        self._stages[stage] = checker

    async def authenticate(
        self,
        auth: Any,
        flows: Flows,
        *,
        uri: str,
        method: str,
        user_id: str | None = None,
        params: dict[str, Any] | None = None,
        before_new_session: Callable[[], None] | None = None,
        token_id: int | None = None,
        can_skip: bool = False,
    ) -> UiaResult:
        """Run one UIA step for the request's `auth` dict; return when a flow is done.

        `before_new_session` runs before a session row is created (a rate limit for
        anonymous callers: it raises to refuse). `token_id`: the requester's access
        token, marked validated when a flow completes; `can_skip`: the operation may
        go without UIA when that token was validated within the session timeout."""
        if can_skip and token_id is not None and self._session_timeout_ms > 0:
            validated = await self._store.token_validated_ts(token_id)
            if validated is not None and _now_ms() - validated < self._session_timeout_ms:
                return UiaResult("", [], {})
        result = await self._authenticate(
            auth, flows, uri, method, user_id, params or {}, before_new_session
        )
        if token_id is not None:
            await self._store.mark_token_validated(token_id, _now_ms())
        return result

    async def _authenticate(
        self,
        auth: Any,
        flows: Flows,
        uri: str,
        method: str,
        user_id: str | None,
        params: dict[str, Any],
        before_new_session: Callable[[], None] | None,
    ) -> UiaResult:
        if user_id is not None and [PASSWORD] in [list(flow) for flow in flows]:
            flows = await self._flows_for(user_id, flows)
        if auth is None:
            if before_new_session is not None:
                before_new_session()
            new_session = await self._new_session(uri, method)
            raise self._challenge(flows, params, new_session, [])
        if not isinstance(auth, dict):
            raise bad_json("'auth' must be an object")
        given = auth.get("session")
        if given is None:
            if before_new_session is not None:
                before_new_session()
            session_id = await self._new_session(uri, method)
            session_data: dict[str, Any] = {}
            completed: list[str] = []
        else:
            if not isinstance(given, str) or len(given) > MAX_SESSION_ID_LENGTH:
                raise bad_json("'auth.session' must be a string")
            session_id = given
            session = await self._store.get_uia_session(session_id)
            if session is None or session.created_ts + SESSION_LIFETIME_MS < _now_ms():
                raise MatrixError(400, "M_UNKNOWN", "Unknown session ID")
            if (session.uri, session.method) != (uri, method):
                raise MatrixError(
                    403, "M_FORBIDDEN", "Requested operation has changed during the UI auth"
                )
            session_data, completed = session.data, session.completed
        if user_id is not None and session_data.get("user_id", user_id) != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "Session belongs to another user")

        stage = auth.get("type")
        if stage is not None:
            if not isinstance(stage, str):
                raise bad_json("'auth.type' must be a string")
            offered = {s for flow in flows for s in flow}
            checker = self._stages.get(stage)
            if stage not in offered or checker is None:
                raise MatrixError(400, "M_UNRECOGNIZED", f"Unrecognised login type {stage[:64]}")
            if stage not in completed:
                try:
                    data = await checker(auth, StageContext(user_id, session_data, uri))
                except StageFailed as exc:
                    raise self._challenge(
                        flows, params, session_id, completed, exc.errcode, exc.message
                    ) from None
                updated = await self._store.complete_uia_stage(session_id, stage, data)
                if updated is None:
                    raise MatrixError(400, "M_UNKNOWN", "Unknown session ID")
                session_data, completed = updated.data, updated.completed

        done = set(completed)
        if any(set(flow) <= done for flow in flows):
            return UiaResult(session_id, list(completed), dict(session_data))
        raise self._challenge(flows, params, session_id, completed)

    async def _flows_for(self, user_id: str, flows: Flows) -> Flows:
        """A password flow for users with a password, an SSO flow for users linked to
        an identity provider (both when both; the password alone otherwise)."""
        if self._has_sso_identity is None or not await self._has_sso_identity(user_id):
            return flows
        user = await self._accounts.get_user(user_id)
        keep = [f for f in flows if list(f) != [PASSWORD]]
        if self._passwords and user is not None and user.password_hash is not None:
            keep = list(flows)
        return [*keep, [SSO]]

    async def finish(self, result: UiaResult) -> None:
        """Forget a session whose operation has been carried out (no replay)."""
        if result.session_id:  # "": UIA skipped within the session timeout
            await self._store.delete_uia_session(result.session_id)

    async def expire_sessions(self) -> int:
        return await self._store.delete_uia_sessions_before(_now_ms() - SESSION_LIFETIME_MS)

    # -- the 401 answer -----------------------------------------------------------------

    @staticmethod
    def _challenge(
        flows: Flows,
        params: dict[str, Any],
        session_id: str,
        completed: list[str],
        errcode: str | None = None,
        error: str | None = None,
    ) -> MatrixError:
        extra: dict[str, Any] = {
            "flows": [{"stages": list(flow)} for flow in flows],
            "params": params,
            "session": session_id,
        }
        if completed:
            extra["completed"] = list(completed)
        return UiaChallenge(extra, errcode, error)

    async def _new_session(self, uri: str, method: str) -> str:
        session_id = tokens.session_id()
        await self._store.create_uia_session(session_id, uri, method)
        return session_id

    # -- built-in stages ----------------------------------------------------------------

    async def _check_dummy(self, auth: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        return {}

    async def _check_password(self, auth: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        if ctx.user_id is None:
            raise StageFailed("M_FORBIDDEN", "Password authentication needs an account")
        if not self._passwords:
            raise StageFailed("M_FORBIDDEN", "Password authentication is disabled")
        claimed = identifier_user(auth)
        password = auth.get("password")
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            raise bad_json("'auth.password' must be a string")
        if claimed is not None and self.qualify(claimed) != ctx.user_id:
            raise StageFailed("M_FORBIDDEN", "Requested user ID does not match the session")
        user = await self._accounts.get_user(ctx.user_id)
        if user is None or user.deactivated:
            raise StageFailed("M_FORBIDDEN", "Invalid password")
        if not await self._hasher.verify(user.password_hash, password):
            raise StageFailed("M_FORBIDDEN", "Invalid password")
        return {"user_id": ctx.user_id}

    async def _check_registration_token(
        self, auth: dict[str, Any], ctx: StageContext
    ) -> dict[str, Any]:
        token = auth.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= 64:
            raise StageFailed("M_UNAUTHORIZED", "Invalid registration token")
        if ctx.session_data.get("registration_token") == token:
            return {}
        if not await self._store.reserve_registration_token(token):
            raise StageFailed("M_UNAUTHORIZED", "Invalid registration token")
        return {"registration_token": token}

    def qualify(self, user: str) -> str:
        """A full user ID from a localpart or a user ID (lower-cased localpart)."""
        if user.startswith("@"):
            return user
        return f"@{user.lower()}:{self._server_name}"


def identifier_user(auth: dict[str, Any]) -> str | None:
    """The user named by an `identifier` of type m.id.user, or the legacy `user` field.

    None when neither is given; 400 for malformed or unsupported identifiers.
    """
    identifier = auth.get("identifier")
    if identifier is not None:
        if not isinstance(identifier, dict):
            raise bad_json("'identifier' must be an object")
        kind = identifier.get("type")
        if kind != "m.id.user":
            if isinstance(kind, str) and kind in ("m.id.thirdparty", "m.id.phone"):
                raise MatrixError(
                    400, "M_UNKNOWN", "Third-party identifiers are not supported here"
                )
            raise MatrixError(400, "M_UNKNOWN", "Unknown login identifier type")
        user = identifier.get("user")
        if not isinstance(user, str) or not 0 < len(user) <= 255:
            raise bad_json("'identifier.user' must be a string of 1 to 255 characters")
        return user
    user = auth.get("user")
    if user is None:
        return None
    if not isinstance(user, str) or not 0 < len(user) <= 255:
        raise bad_json("'user' must be a string of 1 to 255 characters")
    return user
