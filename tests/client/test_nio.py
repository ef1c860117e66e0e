"""A whole conversation driven by a real third-party client (matrix-nio's AsyncClient)
against the server started the way the README starts it: a subprocess running
`python -m homeserver -c <config>`, with the config from `generate-config`.

Two users register, log in, create a room, invite, join, send and receive (sync),
type, send receipts, change their profile (seen by the other), upload and query device
keys, and exchange a to-device message. nio is installed without libolm, so the key
requests go through nio's own `Api` builders and response parsers (`client._send`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import nio
import pytest
import yaml
from nacl.signing import SigningKey
from signedjson.sign import sign_json

from tests.deployment import FULL_LAYOUT, Deployment, missing_parts
from tests.deployment_mode import READER_WRITERS
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SERVER_NAME = "localhost"
PASSWORD = "nio test password"
START_TIMEOUT_S = 30
SYNC_TIMEOUT_MS = 3000


def _run_cli(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "homeserver", *args],
        cwd=cwd,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="module", params=["single", "workers", "writers"])
def server_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Generate a config, switch rate limits off, start the server, wait for /versions.
    "workers": the same conversation through nginx against the seven-process deployment
    (main, two client readers, a federation inbound worker, a federation sender, two
    event persisters) on PostgreSQL and Redis (tests/deployment.py); "writers": that
    deployment with both client readers also writing account data, to-device
    messages, receipts, push rules and device lists (the conversation's receipts, read
    markers, key uploads and to-device messages are then served by the readers)."""
    if request.param != "single":
        why = missing_parts()
        if why is not None:
            if os.environ.get("CI"):
                pytest.fail(f"the worker deployment must run in CI: {why}")
            pytest.skip(why)
        writers = {"stream_writers": READER_WRITERS} if request.param == "writers" else {}
        deployment = Deployment(
            tmp_path_factory.mktemp(f"nio_{request.param}"), **FULL_LAYOUT, overrides=writers
        ).start()
        try:
            yield deployment.url
        finally:
            deployment.stop()
        return
    workdir = tmp_path_factory.mktemp("nio_server")
    port = free_port()
    config_path = workdir / "homeserver.yaml"
    _run_cli(
        "generate-config",
        "--server-name",
        SERVER_NAME,
        "--data-dir",
        "data",
        "--port",
        str(port),
        "--open-registration",
        "-o",
        str(config_path),
        cwd=workdir,
    )
    config = yaml.safe_load(config_path.read_text())
    config["rc_enabled"] = False
    config["password_hashing"] = {"opslimit": 1, "memlimit": 8192}  # fast test logins
    config_path.write_text(yaml.safe_dump(config))
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "homeserver", "-c", str(config_path)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server exited ({proc.returncode}): {(workdir / 'server.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
async def new_client(server_url: str) -> AsyncIterator[Callable[[], nio.AsyncClient]]:
    """`new_client()` -> an AsyncClient for the server (closed after the test)."""
    made: list[nio.AsyncClient] = []

    def factory() -> nio.AsyncClient:
        client = nio.AsyncClient(server_url, config=nio.AsyncClientConfig(encryption_enabled=False))
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()


def _unique(name: str) -> str:
    return f"{name}{time.monotonic_ns() % 10**9}"


async def _register(client: nio.AsyncClient, localpart: str) -> nio.RegisterResponse:
    response = await client.register(localpart, PASSWORD, device_name=f"{localpart} phone")
    assert isinstance(response, nio.RegisterResponse), response
    assert response.user_id == f"@{localpart}:{SERVER_NAME}"
    assert response.device_id and response.access_token
    return response


async def _sync(client: nio.AsyncClient, **kwargs: Any) -> nio.SyncResponse:
    response = await client.sync(timeout=SYNC_TIMEOUT_MS, **kwargs)
    assert isinstance(response, nio.SyncResponse), response
    return response


async def _sync_until(client: nio.AsyncClient, predicate: Any, attempts: int = 5) -> Any:
    """Sync (incrementally) until predicate(response) is truthy; return that value."""
    for _ in range(attempts):
        response = await _sync(client)
        found = predicate(response)
        if found:
            return found
    raise AssertionError("the expected data never arrived in /sync")


def _signed_device_keys(user_id: str, device_id: str, key: SigningKey) -> dict[str, Any]:
    from signedjson.key import encode_verify_key_base64

    key.alg = "ed25519"  # type: ignore[attr-defined]
    key.version = device_id  # type: ignore[attr-defined]
    device_keys = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            f"curve25519:{device_id}": "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
            f"ed25519:{device_id}": encode_verify_key_base64(key.verify_key),
        },
    }
    return sign_json(device_keys, user_id, key)


async def test_two_users_converse(new_client: Callable[[], nio.AsyncClient]) -> None:
    alice, bob_registration_client, bob = new_client(), new_client(), new_client()

    # -- register (alice), register then log in on a second device (bob)
    alice_local, bob_local = _unique("alice"), _unique("bob")
    alice_reg = await _register(alice, alice_local)
    bob_reg = await _register(bob_registration_client, bob_local)
    bob.user = bob_reg.user_id
    login = await bob.login(PASSWORD, device_name="bob laptop")
    assert isinstance(login, nio.LoginResponse), login
    assert login.user_id == bob_reg.user_id
    assert login.device_id != bob_reg.device_id
    whoami = await bob.whoami()
    assert isinstance(whoami, nio.WhoamiResponse), whoami
    assert (whoami.user_id, whoami.device_id) == (bob_reg.user_id, login.device_id)
    alice_id, bob_id = alice_reg.user_id, bob_reg.user_id

    await _sync(alice, full_state=True)
    await _sync(bob, full_state=True)

    # -- create a room, invite, join
    created = await alice.room_create(name="nio chat", topic="testing")
    assert isinstance(created, nio.RoomCreateResponse), created
    room_id = created.room_id
    invited = await alice.room_invite(room_id, bob_id)
    assert isinstance(invited, nio.RoomInviteResponse), invited

    invite_state = await _sync_until(bob, lambda r: r.rooms.invite.get(room_id))
    names = [e.name for e in invite_state.invite_state if isinstance(e, nio.InviteNameEvent)]
    assert names == ["nio chat"]
    joined = await bob.join(room_id)
    assert isinstance(joined, nio.JoinResponse), joined
    assert joined.room_id == room_id
    members = await alice.joined_members(room_id)
    assert isinstance(members, nio.JoinedMembersResponse), members
    assert sorted(m.user_id for m in members.members) == sorted([alice_id, bob_id])

    # -- send and receive
    sent = await alice.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"}
    )
    assert isinstance(sent, nio.RoomSendResponse), sent

    def bob_sees_message(r: nio.SyncResponse) -> Any:
        room = r.rooms.join.get(room_id)
        if room is None:
            return None
        return [e for e in room.timeline.events if isinstance(e, nio.RoomMessageText)]

    messages = await _sync_until(bob, bob_sees_message)
    assert [(m.sender, m.body, m.event_id) for m in messages] == [
        (alice_id, "hello bob", sent.event_id)
    ]
    assert bob.rooms[room_id].display_name == "nio chat"
    assert bob.rooms[room_id].topic == "testing"

    history = await bob.room_messages(room_id, start="", limit=20)
    assert isinstance(history, nio.RoomMessagesResponse), history
    bodies = [e.body for e in history.chunk if isinstance(e, nio.RoomMessageText)]
    assert bodies == ["hello bob"]

    # -- typing
    typing = await bob.room_typing(room_id, True, timeout=30000)
    assert isinstance(typing, nio.RoomTypingResponse), typing

    def alice_sees_typing(r: nio.SyncResponse) -> Any:
        room = r.rooms.join.get(room_id)
        if room is None:
            return None
        notices = [e for e in room.ephemeral if isinstance(e, nio.TypingNoticeEvent)]
        return notices and bob_id in notices[-1].users

    assert await _sync_until(alice, alice_sees_typing)
    assert alice.rooms[room_id].typing_users == [bob_id]

    # -- receipts (and the fully-read marker)
    receipt = await bob.update_receipt_marker(room_id, sent.event_id)
    assert isinstance(receipt, nio.UpdateReceiptMarkerResponse), receipt
    markers = await bob.room_read_markers(room_id, sent.event_id, sent.event_id)
    assert isinstance(markers, nio.RoomReadMarkersResponse), markers

    def alice_sees_receipt(r: nio.SyncResponse) -> Any:
        room = r.rooms.join.get(room_id)
        if room is None:
            return None
        return [
            rc
            for e in room.ephemeral
            if isinstance(e, nio.ReceiptEvent)
            for rc in e.receipts
            if rc.user_id == bob_id
        ]

    receipts = await _sync_until(alice, alice_sees_receipt)
    assert [(r.event_id, r.receipt_type, r.user_id) for r in receipts] == [
        (sent.event_id, "m.read", bob_id)
    ]

    # -- profile change seen by the other user
    renamed = await bob.set_displayname("Bobby")
    assert isinstance(renamed, nio.ProfileSetDisplayNameResponse), renamed

    def alice_sees_rename(r: nio.SyncResponse) -> Any:
        room = r.rooms.join.get(room_id)
        if room is None:
            return None
        return [
            e
            for e in room.timeline.events
            if isinstance(e, nio.RoomMemberEvent) and e.state_key == bob_id
        ]

    member_events = await _sync_until(alice, alice_sees_rename)
    assert member_events[-1].content["displayname"] == "Bobby"
    assert member_events[-1].membership == "join"
    assert alice.rooms[room_id].user_name(bob_id) == "Bobby"
    profile = await alice.get_profile(bob_id)
    assert isinstance(profile, nio.ProfileGetResponse), profile
    assert profile.displayname == "Bobby"
    assert (await alice.get_displayname(bob_id)).displayname == "Bobby"

    # -- device keys: bob uploads, alice queries
    signing_key = SigningKey.generate()
    device_keys = _signed_device_keys(bob_id, login.device_id, signing_key)
    one_time = {
        "signed_curve25519:AAAAAQ": sign_json(
            {"key": "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs"}, bob_id, signing_key
        )
    }
    method, path, data = nio.Api.keys_upload(
        bob.access_token, {"device_keys": device_keys, "one_time_keys": one_time}
    )
    uploaded = await bob._send(nio.KeysUploadResponse, method, path, data)
    assert isinstance(uploaded, nio.KeysUploadResponse), uploaded
    assert uploaded.signed_curve25519_count == 1

    method, path, data = nio.Api.keys_query(alice.access_token, {bob_id})
    queried = await alice._send(nio.KeysQueryResponse, method, path, data)
    assert isinstance(queried, nio.KeysQueryResponse), queried
    got = queried.device_keys[bob_id][login.device_id]
    assert got["keys"] == device_keys["keys"]
    assert got["signatures"] == device_keys["signatures"]
    assert got["unsigned"]["device_display_name"] == "bob laptop"

    # -- to-device message from alice to bob's laptop
    message = nio.ToDeviceMessage(
        "org.example.nio_test", bob_id, login.device_id, {"hello": "bob", "n": 1}
    )
    to_device = await alice.to_device(message, tx_id="nio-txn-1")
    assert isinstance(to_device, nio.ToDeviceResponse), to_device

    def bob_gets_to_device(r: nio.SyncResponse) -> Any:
        return [e for e in r.to_device_events if e.source.get("type") == "org.example.nio_test"]

    got_events = await _sync_until(bob, bob_gets_to_device)
    assert [(e.sender, e.source["content"]) for e in got_events] == [
        (alice_id, {"hello": "bob", "n": 1})
    ]
    # Delivered once: the next sync does not repeat it.
    again = await _sync(bob)
    assert bob_gets_to_device(again) == []

    # -- bob's other device still works; logging out ends the session
    old_token = bob_registration_client.access_token
    assert isinstance(await bob_registration_client.logout(), nio.LogoutResponse)
    bob_registration_client.access_token = old_token
    stale = await bob_registration_client.whoami()
    assert isinstance(stale, nio.WhoamiError), stale
    assert stale.status_code == "M_UNKNOWN_TOKEN"
    assert isinstance(await bob.whoami(), nio.WhoamiResponse)


async def test_a_picture_sent_by_one_client_is_downloaded_by_the_other(
    new_client: Callable[[], nio.AsyncClient],
) -> None:
    """Issue 12: nio uploads an image, sends an m.image event; the other user's client
    sees the event in /sync and downloads the same bytes and a thumbnail (authenticated
    media: nio uses /_matrix/client/v1/media with its access token)."""
    import io

    from PIL import Image

    alice, bob = new_client(), new_client()
    a = await _register(alice, _unique("alice"))
    await _register(bob, _unique("bob"))
    room = await alice.room_create(invite=[bob.user_id])
    assert isinstance(room, nio.RoomCreateResponse), room
    assert isinstance(await bob.join(room.room_id), nio.JoinResponse)

    buf = io.BytesIO()
    Image.new("RGB", (800, 600), (20, 160, 60)).save(buf, "JPEG")
    data = buf.getvalue()
    uploaded, _ = await alice.upload(
        io.BytesIO(data), content_type="image/jpeg", filename="park.jpg", filesize=len(data)
    )
    assert isinstance(uploaded, nio.UploadResponse), uploaded
    assert uploaded.content_uri.startswith(f"mxc://{SERVER_NAME}/")
    sent = await alice.room_send(
        room.room_id,
        "m.room.message",
        {
            "msgtype": "m.image",
            "body": "park.jpg",
            "url": uploaded.content_uri,
            "info": {"mimetype": "image/jpeg", "size": len(data), "w": 800, "h": 600},
        },
    )
    assert isinstance(sent, nio.RoomSendResponse), sent

    def bob_sees_image(r: nio.SyncResponse) -> Any:
        joined = r.rooms.join.get(room.room_id)
        for event in joined.timeline.events if joined else []:
            if isinstance(event, nio.RoomMessageImage) and event.sender == a.user_id:
                return event.url
        return None

    url = await _sync_until(bob, bob_sees_image)
    downloaded = await bob.download(mxc=url)
    assert isinstance(downloaded, nio.MemoryDownloadResponse), downloaded
    assert downloaded.body == data
    assert downloaded.content_type == "image/jpeg"
    assert downloaded.filename == "park.jpg"
    server_name, media_id = url[len("mxc://") :].split("/")
    thumb = await bob.thumbnail(server_name, media_id, 320, 240, nio.ResizingMethod.scale)
    assert isinstance(thumb, nio.ThumbnailResponse), (
        thumb.transport_response.status,
        await thumb.transport_response.text(),
    )
    assert Image.open(io.BytesIO(thumb.body)).size == (320, 240)
