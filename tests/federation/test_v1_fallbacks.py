"""Older servers (issue 9): when a peer does not know the v2 send_join / send_leave /
invite endpoints (404 or 400 M_UNRECOGNIZED), we fall back to v1 and read its
`[200, {...}]` answer, as Synapse does; a make_join refused for the room's version
reaches the client as M_INCOMPATIBLE_ROOM_VERSION instead of a generic 404."""

from __future__ import annotations

from typing import Any

import pytest

from federation.client import FederationError
from federation.remote_rooms import FederationRemoteRooms
from homeserver.errors import MatrixError
from homeserver.events.signing import generate_signing_key

ROOM = "!old:old.example"
USER = "@me:us.example"
PREV = "$" + "B" * 43


def _template(membership: str) -> dict[str, Any]:
    return {
        "type": "m.room.member",
        "room_id": ROOM,
        "sender": USER,
        "state_key": USER,
        "content": {"membership": membership},
        "prev_events": [PREV],
        "auth_events": [PREV],
        "depth": 5,
        "origin_server_ts": 1,
    }


class OldPeer:
    """Knows only the v1 membership endpoints."""

    def __init__(self, make_error: FederationError | None = None) -> None:
        self.calls: list[str] = []
        self.make_error = make_error

    async def get_json(self, server: str, path: str, *, query: Any = None, timeout: Any = None):
        self.calls.append(f"GET {path.split('/')[4]}")
        if self.make_error is not None:
            raise self.make_error
        kind = path.split("/")[4].removeprefix("make_")
        return {"event": _template(kind), "room_version": "10"}

    async def put_json(self, server: str, path: str, body: Any, *, query: Any = None, timeout=None):
        version, endpoint = path.split("/")[3:5]
        self.calls.append(f"PUT {version}/{endpoint}")
        if version == "v2":
            raise FederationError(404, "M_UNRECOGNIZED", {"errcode": "M_UNRECOGNIZED"})
        if endpoint == "send_join":
            return [200, {"state": [], "auth_chain": []}]
        return [200, {}]


def _rooms(peer: OldPeer) -> FederationRemoteRooms:
    return FederationRemoteRooms(
        peer,
        checks=None,
        server_name="us.example",  # type: ignore[arg-type]
        signing_key=generate_signing_key("k"),
    )


async def test_send_join_falls_back_to_v1() -> None:
    peer = OldPeer()
    answers = []

    async def accept(answer: Any) -> None:
        answers.append(answer)

    event = await _rooms(peer).join(ROOM, USER, ["old.example"], {}, accept)
    assert peer.calls == ["GET make_join", "PUT v2/send_join", "PUT v1/send_join"]
    assert event.content["membership"] == "join" and len(answers) == 1


async def test_send_leave_falls_back_to_v1() -> None:
    peer = OldPeer()
    event = await _rooms(peer).leave(ROOM, USER, ["old.example"])
    assert peer.calls == ["GET make_leave", "PUT v2/send_leave", "PUT v1/send_leave"]
    assert event.content["membership"] == "leave"


@pytest.mark.parametrize("errcode", ["M_INCOMPATIBLE_ROOM_VERSION", "M_UNSUPPORTED_ROOM_VERSION"])
async def test_make_join_version_errors_reach_the_client(errcode: str) -> None:
    error = FederationError(400, errcode, {"errcode": errcode, "room_version": "99"})
    peer = OldPeer(make_error=error)

    async def accept(answer: Any) -> None:
        raise AssertionError("no join expected")

    with pytest.raises(MatrixError) as e:
        await _rooms(peer).join(ROOM, USER, ["old.example", "other.example"], {}, accept)
    assert (e.value.status, e.value.errcode) == (400, errcode)
    assert peer.calls == ["GET make_join"]  # no point asking another server
