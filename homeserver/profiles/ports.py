"""What the profile service needs from other servers, declared as a port.

Federation implements `RemoteProfiles` (GET /_matrix/federation/v1/query/profile); the
composition module passes it to the profile service. Without federation, remote lookups
answer 404.
"""

from __future__ import annotations

from typing import Any, Protocol


class RemoteProfiles(Protocol):
    """Profile lookups for users of other servers."""

    async def query_profile(self, user_id: str, field: str | None = None) -> dict[str, Any] | None:
        """The remote user's profile (only `field` when given), or None when the remote
        server says the user or field does not exist or cannot be reached."""
        ...
