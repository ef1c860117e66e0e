"""matrix-js-sdk (a real client, from npm) on our delayed events (MSC4140), the way
Element Call's MembershipManager uses them: a call-membership state event scheduled
with a short delay and restarted while connected is not sent; once the restarts stop
(the client "crashed") the server sends it; a cancelled message cannot be sent.

Node and the package come from .ci/run (tests/js); without them the test skips, unless
JS_CLIENTS=1."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.client.helpers import auth, register_user
from tests.client.test_sliding_sync_jssdk import live, run_js  # noqa: F401 (fixture)


async def test_matrix_js_sdk_delayed_leave_heartbeat_and_cancel(
    live: TestClient,  # noqa: F811
) -> None:
    alice = await register_user(live, "alice")
    resp = await live.post(
        "/_matrix/client/v3/createRoom",
        json={"preset": "public_chat"},
        headers=auth(alice["access_token"]),
    )
    room = (await resp.json())["room_id"]
    seen = await run_js(live, "delayed_events_client.mjs", alice, room)
    assert seen["listed"] == [seen["leaveId"]]
    assert seen["restarts"] >= 5
    assert seen["beforeCrash"] is None  # restarted in time: never sent
    assert seen["sent"] == {"left": True}  # the server sent it for the "crashed" client
    assert seen["afterCancel"] == "M_NOT_FOUND"
    assert seen["stillScheduled"] == 0
