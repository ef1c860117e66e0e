"""What server admins decided about users and rooms, as the rest of the server sees it.

- Shadow-banned users get success answers, but what they send goes nowhere.
- Suspended users may read, leave rooms and redact their own events; everything else
  that changes rooms or their profile is refused with 403 M_USER_SUSPENDED.
- Locked users get 401 M_USER_LOCKED (soft logout) on every request but /logout.
- Blocked rooms cannot be joined, knocked on or invited into by local users.

The user flags are checked on hot paths (every request, every send), so they live in
memory: a few sets loaded once at start (they stay small) and updated by `set_flag`,
which writes the database first. This serves one server process, as the rest of the
storage layer does. Room blocks are only checked on membership changes, so they are
read from the database.
"""

from __future__ import annotations

from collections.abc import Callable

from homeserver.errors import MatrixError, forbidden
from homeserver.storage.admin_rooms import AdminRoomStore
from homeserver.storage.admin_users import FLAGS, AdminUserStore


def suspended_error(message: str) -> MatrixError:
    return MatrixError(403, "M_USER_SUSPENDED", message)


def locked_error() -> MatrixError:
    return MatrixError(401, "M_USER_LOCKED", "This account has been locked", soft_logout=True)


def blocked_room_error() -> MatrixError:
    return forbidden("This room has been blocked on this server")


class Moderation:
    def __init__(
        self, users: AdminUserStore, rooms: AdminRoomStore, flagged: dict[str, set[str]]
    ) -> None:
        self._users = users
        self._rooms = rooms
        self._flagged = {flag: set(flagged.get(flag, ())) for flag in FLAGS}
        # Told after each change (the main tells its workers to reload).
        self.on_change: list[Callable[[], None]] = []

    async def reload(self) -> None:
        """Re-read every flag (a worker, after the main changed one)."""
        flagged = await self._users.flagged_users()
        self._flagged = {flag: set(flagged.get(flag, ())) for flag in FLAGS}

    @classmethod
    async def load(cls, users: AdminUserStore, rooms: AdminRoomStore) -> Moderation:
        return cls(users, rooms, await users.flagged_users())

    def has_flag(self, user_id: str, flag: str) -> bool:
        return user_id in self._flagged[flag]

    def is_shadow_banned(self, user_id: str) -> bool:
        return user_id in self._flagged["shadow_banned"]

    def is_suspended(self, user_id: str) -> bool:
        return user_id in self._flagged["suspended"]

    def is_locked(self, user_id: str) -> bool:
        return user_id in self._flagged["locked"]

    async def set_flag(self, user_id: str, flag: str, value: bool) -> bool:
        """Store the flag, then apply it; False if the user does not exist."""
        if not await self._users.set_flag(user_id, flag, value):
            return False
        if value:
            self._flagged[flag].add(user_id)
        else:
            self._flagged[flag].discard(user_id)
        for listener in self.on_change:
            listener()
        return True

    def check_not_suspended(self, user_id: str, what: str) -> None:
        if self.is_suspended(user_id):
            raise suspended_error(f"{what} while the account is suspended is not allowed")

    async def is_room_blocked(self, room_id: str) -> bool:
        return await self._rooms.get_block(room_id) is not None

    async def check_room_not_blocked(self, room_id: str) -> None:
        if await self.is_room_blocked(room_id):
            raise blocked_room_error()
