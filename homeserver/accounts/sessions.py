"""Sessions: what a login is (a device plus its access and refresh tokens) and its life.

Login (password or login token), session creation for registration, logout, refresh
with rotating refresh tokens, device deletion (which runs the device hooks of other areas), short-
lived login tokens, and the throttled last-seen bookkeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.accounts import tokens
from homeserver.accounts.passwords import PasswordHasher
from homeserver.config.model import TokenLifetimes
from homeserver.errors import MatrixError, forbidden, unknown_token
from homeserver.moderation import Moderation, locked_error
from homeserver.ratelimit import RateLimiters
from homeserver.storage import AccountStore
from homeserver.storage.account_auth import AccountAuthStore
from homeserver.write_behind import WriteBehind

logger = logging.getLogger(__name__)

# Access tokens that come with a refresh token expire after this (Synapse's default).
LOGIN_TOKEN_LIFETIME_MS = 2 * 60 * 1000
# Pending last-seen updates are written together this often.
LAST_SEEN_FLUSH_S = 2.0
LAST_SEEN_INTERVAL_S = 60.0

DeviceHook = Callable[[str, str], Awaitable[None]]


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Session:
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str | None = None
    expires_in_ms: int | None = None

    def to_json(self, server_name: str) -> dict[str, Any]:
        """The login/register response fields for this session."""
        body: dict[str, Any] = {
            "user_id": self.user_id,
            "access_token": self.access_token,
            "device_id": self.device_id,
            "home_server": server_name,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
            body["expires_in_ms"] = self.expires_in_ms
        return body


def _earliest(now: int, lifetime_ms: int | None, session_end: int | None) -> int | None:
    """When something living `lifetime_ms` from `now` ends, within the session (None:
    never)."""
    ends = [t for t in (None if lifetime_ms is None else now + lifetime_ms, session_end) if t]
    return min(ends) if ends else None


class SessionService:
    def __init__(
        self,
        accounts: AccountStore,
        auth_store: AccountAuthStore,
        hasher: PasswordHasher,
        limiters: RateLimiters,
        server_name: str,
        *,
        device_deleted: Sequence[DeviceHook] = (),
        device_created: Sequence[DeviceHook] = (),
        device_renamed: Sequence[DeviceHook] = (),
        moderation: Moderation | None = None,
        lifetimes: TokenLifetimes = TokenLifetimes(),
    ) -> None:
        """The hooks are `async (user_id, device_id)` of other areas (E2EE drops a
        deleted device's keys and announces new or renamed devices to other servers);
        one failing hook is logged and does not stop the others."""
        self._accounts = accounts
        self.accounts = accounts  # (for the JWT login's user lookups)
        self._auth_store = auth_store
        self._hasher = hasher
        self._limiters = limiters
        self._server_name = server_name
        self._deleted_hooks = list(device_deleted)
        self._created_hooks = list(device_created)
        self._renamed_hooks = list(device_renamed)
        # Admin decisions: locked accounts may not log in. None: no moderation.
        self._moderation = moderation
        # How long tokens and whole login sessions live (the operator's lifetimes).
        self._lifetimes = lifetimes
        # Resource limits (homeserver/accounts/mau.py): Synapse refuses logins while
        # disabled, or while full to users not counted this month. None: no limits.
        self.gate: Callable[[str], Awaitable[None]] | None = None

    def qualify(self, user: str) -> str:
        """Full user ID from a localpart or a user ID; localparts are lower-cased."""
        return user if user.startswith("@") else f"@{user.lower()}:{self._server_name}"

    # -- creating sessions --------------------------------------------------------------

    async def create_session(
        self,
        user_id: str,
        device_id: str | None = None,
        display_name: str | None = None,
        *,
        refreshable: bool = False,
    ) -> Session:
        """A new login on `device_id` (created if new; its old tokens die if reused)."""
        device_id = device_id or tokens.device_id()
        created = await self._accounts.upsert_device(user_id, device_id, display_name)
        if not created:
            # The spec: logging in on a known device invalidates its previous tokens.
            await self._accounts.delete_device_sessions(user_id, device_id)
        else:
            await _run_hooks(self._created_hooks, "device-created", user_id, device_id)
        access = tokens.access_token()
        now, life = _now_ms(), self._lifetimes
        session_end = None if life.session_ms is None else now + life.session_ms
        if not refreshable:
            until = _earliest(now, life.nonrefreshable_access_ms, session_end)
            await self._accounts.add_access_token(access, user_id, device_id, valid_until_ms=until)
            return Session(user_id, device_id, access)
        refresh = tokens.refresh_token()
        refresh_id = await self._accounts.add_refresh_token(
            refresh, user_id, device_id, _earliest(now, life.refresh_ms, session_end), session_end
        )
        until = _earliest(now, life.refreshable_access_ms, session_end)
        assert until is not None
        await self._accounts.add_access_token(
            access, user_id, device_id, valid_until_ms=until, refresh_token_id=refresh_id
        )
        return Session(user_id, device_id, access, refresh, until - now)

    async def login_with_password(
        self,
        user: str,
        password: str,
        *,
        address: str,
        device_id: str | None,
        display_name: str | None,
        refreshable: bool,
    ) -> Session:
        """m.login.password, with Synapse's rc_login limits (address, account, failures)."""
        self._limiters.check("login_address", address)
        user_id = self.qualify(user)
        self._limiters.check("login_account", user_id)
        # As Synapse: while the failed-attempts bucket is exhausted every attempt is
        # refused, even one with the right password (no guessing through the limit).
        failures = self._limiters.get("login_failed_attempts")
        failures.peek(user_id)
        info = await self._accounts.get_user(user_id)
        ok = info is not None and await self._hasher.verify(info.password_hash, password)
        if not ok or info is None:
            failures.record(user_id)
            # The next guess may land on another process: it must know of this one.
            await self._limiters.settle()
            raise forbidden("Invalid username or password")
        if info.deactivated:
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        self._check_not_locked(user_id)
        if self.gate is not None:
            await self.gate(user_id)
        return await self.create_session(user_id, device_id, display_name, refreshable=refreshable)

    def _check_not_locked(self, user_id: str) -> None:
        if self._moderation is not None and self._moderation.is_locked(user_id):
            raise locked_error()

    async def login_with_token(
        self,
        token: str,
        *,
        address: str,
        device_id: str | None,
        display_name: str | None,
        refreshable: bool,
    ) -> Session:
        """m.login.token: a single-use token from POST /login/get_token."""
        self._limiters.check("login_address", address)
        user_id = await self._auth_store.consume_login_token(token)
        if user_id is None:
            raise forbidden("Invalid login token")
        return await self.login_verified(
            user_id, device_id=device_id, display_name=display_name, refreshable=refreshable
        )

    async def login_verified(
        self, user_id: str, *, device_id: str | None, display_name: str | None, refreshable: bool
    ) -> Session:
        """A session for `user_id`, whose identity a login token or a signed JWT
        proved: refused for deactivated and locked accounts and by resource limits."""
        info = await self._accounts.get_user(user_id)
        if info is None or info.deactivated:
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        self._check_not_locked(user_id)
        if self.gate is not None:
            await self.gate(user_id)
        return await self.create_session(user_id, device_id, display_name, refreshable=refreshable)

    async def issue_login_token(self, user_id: str) -> tuple[str, int]:
        """(token, lifetime in ms) for POST /login/get_token."""
        token = tokens.login_token()
        await self._auth_store.add_login_token(token, user_id, _now_ms() + LOGIN_TOKEN_LIFETIME_MS)
        return token, LOGIN_TOKEN_LIFETIME_MS

    # -- refresh ------------------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> Session:
        """Rotate a refresh token: new access + refresh token; the old pair's access
        token dies now, the old refresh token once the new one is used."""
        info = await self._accounts.get_refresh_token(refresh_token)
        if info is None:
            raise unknown_token("Unknown refresh token")
        now, session_end = _now_ms(), info.session_expiry_ts
        if any(end is not None and end <= now for end in (info.expiry_ts, session_end)):
            # The token's or the whole session's lifetime is over: sign in again.
            raise unknown_token("The refresh token has expired")
        access, refresh = tokens.access_token(), tokens.refresh_token()
        until = _earliest(now, self._lifetimes.refreshable_access_ms, session_end)
        assert until is not None
        await self._accounts.rotate_refresh_token(
            info.token_id,
            refresh,
            access,
            info.user_id,
            info.device_id,
            until,
            _earliest(now, self._lifetimes.refresh_ms, session_end),
            session_end,
        )
        return Session(info.user_id, info.device_id or "", access, refresh, until - now)

    # -- ending sessions ----------------------------------------------------------------

    async def logout(self, user_id: str, device_id: str | None, access_token: str) -> None:
        """POST /logout: the device goes too (with its keys, via the hooks)."""
        if device_id is None:
            await self._accounts.delete_access_token(access_token)
            return
        await self.delete_devices(user_id, [device_id])

    async def logout_all(self, user_id: str) -> None:
        device_ids = await self._accounts.delete_all_devices(user_id)
        await self.run_device_hooks(user_id, device_ids)

    async def delete_devices(self, user_id: str, device_ids: Sequence[str]) -> None:
        deleted = []
        for device_id in dict.fromkeys(device_ids):
            if await self._accounts.delete_device(user_id, device_id):
                deleted.append(device_id)
        await self.run_device_hooks(user_id, deleted)

    async def run_device_hooks(self, user_id: str, device_ids: Sequence[str]) -> None:
        """Tell other areas about deleted devices; one failing hook does not stop others."""
        for device_id in device_ids:
            await _run_hooks(self._deleted_hooks, "device-deleted", user_id, device_id)

    async def rename_device(self, user_id: str, device_id: str, display_name: str) -> None:
        """Set a device's display name; other servers show it, so the hooks hear of it."""
        await self._accounts.set_device_display_name(user_id, device_id, display_name)
        await _run_hooks(self._renamed_hooks, "device-renamed", user_id, device_id)


async def _run_hooks(hooks: Sequence[DeviceHook], what: str, user_id: str, device_id: str) -> None:
    for hook in hooks:
        try:
            await hook(user_id, device_id)
        except Exception:
            logger.exception("%s hook %r failed for %s", what, hook, device_id)


# A client's User-Agent is kept for admins to read; longer ones are cut (Synapse keeps
# them whole, but a stranger with a token should not store kilobytes per device).
MAX_USER_AGENT = 512


class LastSeenTracker:
    """Keeps each device's last_seen_ts/ip: at most one update per access token per
    minute, written behind (homeserver.write_behind): a request never waits for it, and
    every pending update goes to the database in one transaction per interval. Readers of
    last-seen data call `flush()` first."""

    def __init__(
        self,
        accounts: AccountStore,
        interval_s: float = LAST_SEEN_INTERVAL_S,
        flush_interval_s: float = LAST_SEEN_FLUSH_S,
    ) -> None:
        self._accounts = accounts
        self._interval = interval_s
        self._last: dict[int, float] = {}
        self._writes: WriteBehind[tuple[str, str], tuple[int, str | None, str | None]] = (
            WriteBehind(self._write, name="last-seen", interval_s=flush_interval_s)
        )

    def seen(
        self,
        token_id: int,
        user_id: str,
        device_id: str | None,
        ip: str | None,
        user_agent: str | None = None,
    ) -> None:
        if device_id is None:
            return
        now = time.monotonic()
        last = self._last.get(token_id)
        if last is not None and now - last < self._interval:
            return
        self._last[token_id] = now
        if len(self._last) > 100_000:
            cutoff = now - self._interval
            self._last = {k: v for k, v in self._last.items() if v >= cutoff}
        if user_agent is not None:
            user_agent = user_agent[:MAX_USER_AGENT]
        self._writes.put((user_id, device_id), (_now_ms(), ip, user_agent))

    async def _write(
        self, batch: dict[tuple[str, str], tuple[int, str | None, str | None]]
    ) -> None:
        await self._accounts.update_devices_last_seen(
            [(user, device, ts, ip, ua) for (user, device), (ts, ip, ua) in batch.items()]
        )

    async def flush(self) -> None:
        await self._writes.flush()

    def start(self) -> None:
        self._writes.start()

    async def close(self) -> None:
        await self._writes.close()
