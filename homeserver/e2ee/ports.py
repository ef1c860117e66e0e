"""What E2EE needs from remote servers, as ports federation fills in later.

Until federation sets these AppKeys, keys of remote users are reported under
`failures`, to-device messages for remote users are dropped (and counted) and other
servers are not told when our users' devices change.
"""

from __future__ import annotations

from typing import Any, Protocol


class RemoteKeys(Protocol):
    async def query(
        self, destination: str, device_keys: dict[str, list[str]], timeout_ms: int
    ) -> dict[str, Any]:
        """POST /_matrix/federation/v1/user/keys/query: the remote answer
        (`device_keys`, `master_keys`, `self_signing_keys`). Raises on failure."""
        ...

    async def claim(
        self, destination: str, one_time_keys: dict[str, dict[str, str]], timeout_ms: int
    ) -> dict[str, Any]:
        """POST /_matrix/federation/v1/user/keys/claim: the remote `one_time_keys`."""
        ...

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/user/devices/{userId}: the user's whole device
        list (`user_id`, `stream_id`, `devices`, cross-signing keys). Raises on failure."""
        ...


class RemoteToDevice(Protocol):
    async def send(
        self,
        destination: str,
        sender: str,
        event_type: str,
        message_id: str,
        messages: dict[str, dict[str, dict[str, Any]]],
    ) -> None:
        """Queue an `m.direct_to_device` EDU for `destination` (durably; never blocks on
        the network)."""
        ...


class RemoteDeviceLists(Protocol):
    async def send_edu(
        self, destinations: list[str], edu_type: str, content: dict[str, Any]
    ) -> None:
        """Queue an `m.device_list_update` / `m.signing_key_update` EDU for each
        destination (durably; never blocks on the network)."""
        ...
