"""The operator's rules for what goes into profiles and member events (Synapse's keys):

- `max_avatar_size` / `allowed_avatar_mimetypes`: an avatar must be media this server
  holds (uploaded here, or another server's already in our cache), at most that big and
  of one of those types; anything else is 403 M_FORBIDDEN "This avatar is not allowed"
  (Synapse: fetching a remote file just to check it would be the stranger's resource
  we hold, so media we do not hold is refused);
- `allow_per_room_profiles: false`: a user's own member event carries their global
  display name and avatar, whatever they send (no per-room nicknames).
"""

from __future__ import annotations

from typing import Any

from homeserver.config.model import ProfileSettings
from homeserver.errors import MatrixError
from homeserver.media.ids import parse_mxc
from homeserver.storage import Stores
from homeserver.storage.database import Database
from homeserver.storage.media import MediaStore

MEMBER_PROFILE_KEYS = ("displayname", "avatar_url")


class ProfilePolicy:
    def __init__(
        self,
        stores: Stores,
        database: Database,
        server_name: str,
        settings: ProfileSettings = ProfileSettings(),
    ) -> None:
        self._stores = stores
        self._media = MediaStore(database)  # what we hold of an avatar: size and type
        self._server_name = server_name
        self._settings = settings
        self.per_room_profiles = settings.per_room

    async def check_avatar(self, avatar_url: Any) -> None:
        """403 unless `avatar_url` satisfies the avatar limits (always, without any)."""
        limits = self._settings
        if (limits.max_avatar_size is None and not limits.avatar_mimetypes) or avatar_url in (
            None,
            "",
        ):
            return
        if not await self._avatar_allowed(avatar_url):
            raise MatrixError(403, "M_FORBIDDEN", "This avatar is not allowed")

    async def _avatar_allowed(self, avatar_url: Any) -> bool:
        parsed = parse_mxc(avatar_url) if isinstance(avatar_url, str) else None
        if parsed is None:
            return False
        origin, media_id = parsed
        if origin == self._server_name:
            local = await self._media.get_local(media_id)
            size, kind = (local.media_length, local.content_type) if local else (None, None)
        else:
            remote = await self._media.get_remote(origin, media_id)
            size, kind = (remote.media_length, remote.content_type) if remote else (None, None)
        if size is None and kind is None:
            return False  # not held here (or an upload still pending)
        limits = self._settings
        if limits.max_avatar_size is not None and (size is None or size > limits.max_avatar_size):
            return False
        kind = (kind or "").split(";")[0].strip()
        return not limits.avatar_mimetypes or kind in limits.avatar_mimetypes

    async def own_member_content(self, user_id: str, content: dict[str, Any]) -> dict[str, Any]:
        """A user's own member event as it may be sent: with per-room profiles off, the
        global display name and avatar replace whatever it said (for a join); the
        avatar it carries checked against the limits."""
        if not self.per_room_profiles and content.get("membership") == "join":
            content = {k: v for k, v in content.items() if k not in MEMBER_PROFILE_KEYS}
            profile = await self._stores.accounts.get_profile(user_id)
            if profile is not None and profile.displayname is not None:
                content["displayname"] = profile.displayname
            if profile is not None and profile.avatar_url is not None:
                content["avatar_url"] = profile.avatar_url
            return content
        if "avatar_url" in content:
            await self.check_avatar(content["avatar_url"])
        return content
