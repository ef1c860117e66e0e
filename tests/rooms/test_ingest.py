"""Receiving remote events: checks 4-6 of the spec's receiving algorithm on real storage."""

from __future__ import annotations

import pytest

from homeserver.events.builder import build_event
from homeserver.events.signing import generate_signing_key
from homeserver.graph.auth_rules import auth_types_for_event
from homeserver.rooms.creation import RoomSpec
from homeserver.rooms.ingest import Outcome, RemoteEventIngest
from homeserver.rooms.keyed_lock import KeyedLock
from homeserver.rooms.remote_state import RemoteState
from homeserver.rooms.room_state import RoomState

ALICE = "@alice:test.local"
RITA = "@rita:remote.test"
EVE = "@eve:remote.test"
REMOTE_KEY = generate_signing_key("r1")


class FakeRemote:
    """A remote server that knows some events we lack."""

    def __init__(self) -> None:
        self.events: dict = {}
        self.missing_calls = 0

    async def get_event(self, destination, room_id, event_id):
        return self.events.get(event_id)

    async def get_missing_events(self, destination, room_id, earliest, latest, limit, min_depth):
        self.missing_calls += 1
        return list(self.events.values())[:limit]

    async def get_state_ids(self, destination, room_id, event_id):
        raise RuntimeError("not needed")

    async def get_event_auth(self, destination, room_id, event_id):
        return []


async def remote_event(kit, room_id, sender, etype, content, state_key=None, prev=None):
    version = await kit.events.room_version(room_id)
    prev_ids = prev or await kit.stores.events.get_forward_extremities(room_id)
    state = await kit.stores.current_state.get_current_state_ids(room_id)
    keys = auth_types_for_event(version, etype, sender, state_key, content)
    prevs = await kit.stores.events.get_events(prev_ids)
    return build_event(
        version,
        room_id=room_id,
        sender=sender,
        type=etype,
        content=content,
        state_key=state_key,
        prev_event_ids=prev_ids,
        auth_event_ids=[state[k] for k in sorted(keys) if k in state],
        depth=max((e.depth for e in prevs.values()), default=0) + 1,
        origin_server_ts=1_700_000_000_000,
        server_name="remote.test",
        signing_key=REMOTE_KEY,
    )


@pytest.fixture
async def room(kit):
    return await kit.creator.create_room(
        ALICE, RoomSpec(room_version="12", preset="public_chat"), {}
    )


@pytest.fixture
def remote():
    return FakeRemote()


@pytest.fixture
def ingest(kit, remote):
    locks = KeyedLock()
    fetch = RemoteState(kit.stores, kit.persister, locks, remote)
    return RemoteEventIngest(kit.stores, RoomState(kit.stores), kit.persister, locks, fetch)


async def test_remote_join_and_message_accepted(kit, room, ingest) -> None:
    join = await remote_event(kit, room, RITA, "m.room.member", {"membership": "join"}, RITA)
    assert (await ingest.receive(join, "remote.test")).outcome is Outcome.ACCEPTED
    assert await kit.stores.current_state.get_membership(room, RITA) == "join"
    assert "remote.test" in await kit.stores.current_state.get_joined_hosts(room)
    msg = await remote_event(kit, room, RITA, "m.room.message", {"body": "hello"})
    assert (await ingest.receive(msg, "remote.test")).outcome is Outcome.ACCEPTED
    assert await kit.stores.events.get_forward_extremities(room) == [msg.event_id]
    assert kit.seen[-1][1].event_id == msg.event_id
    # The same PDU again is a duplicate, not a second timeline entry.
    assert (await ingest.receive(msg, "remote.test")).outcome is Outcome.DUPLICATE


async def test_non_member_message_rejected(kit, room, ingest) -> None:
    msg = await remote_event(kit, room, EVE, "m.room.message", {"body": "spam"})
    result = await ingest.receive(msg, "remote.test")
    assert result.outcome is Outcome.REJECTED
    assert await kit.stores.events.get_rejected(msg.event_id)
    assert msg.event_id not in await kit.stores.events.get_forward_extremities(room)


async def test_soft_fail_after_ban(kit, room, ingest) -> None:
    join = await remote_event(kit, room, RITA, "m.room.member", {"membership": "join"}, RITA)
    await ingest.receive(join, "remote.test")
    # Rita writes on top of her join while Alice bans her concurrently.
    sneaky = await remote_event(
        kit, room, RITA, "m.room.message", {"body": "x"}, prev=[join.event_id]
    )
    await kit.events.send(room, ALICE, "m.room.member", {"membership": "ban"}, RITA)
    result = await ingest.receive(sneaky, "remote.test")
    assert result.outcome is Outcome.SOFT_FAILED
    assert await kit.stores.events.is_soft_failed(sneaky.event_id)
    assert sneaky.event_id not in await kit.stores.events.get_forward_extremities(room)
    assert await kit.stores.current_state.get_membership(room, RITA) == "ban"


async def test_missing_prev_events_are_fetched(kit, room, ingest, remote) -> None:
    join = await remote_event(kit, room, RITA, "m.room.member", {"membership": "join"}, RITA)
    await ingest.receive(join, "remote.test")
    m1 = await remote_event(kit, room, RITA, "m.room.message", {"body": "1"})
    remote.events[m1.event_id] = m1
    m2 = await remote_event(kit, room, RITA, "m.room.message", {"body": "2"}, prev=[m1.event_id])
    assert (await ingest.receive(m2, "remote.test")).outcome is Outcome.ACCEPTED
    assert remote.missing_calls == 1
    assert not await kit.stores.events.is_outlier(m1.event_id)
    assert await kit.stores.events.get_forward_extremities(room) == [m2.event_id]


async def test_forged_membership_for_other_user_rejected(kit, room, ingest) -> None:
    forged = await remote_event(kit, room, EVE, "m.room.member", {"membership": "join"}, ALICE)
    assert (await ingest.receive(forged, "remote.test")).outcome is Outcome.REJECTED
    assert await kit.stores.current_state.get_membership(room, ALICE) == "join"


async def test_policy_server_room_soft_fails_unsigned_remote_events(kit, room, remote) -> None:
    """Spec v1.18: in a room whose joined Policy Server refuses an event (or cannot
    be reached), that event from another server soft fails; one it signs is accepted."""
    from homeserver.rooms.policy_server import PolicyServers
    from tests.rooms.test_policy_server import FakePolicyServer

    fake = FakePolicyServer()
    locks = KeyedLock()
    ingest = RemoteEventIngest(
        kit.stores,
        RoomState(kit.stores),
        kit.persister,
        locks,
        RemoteState(kit.stores, kit.persister, locks, remote),
        PolicyServers(kit.stores, fake),
    )
    join = await remote_event(kit, room, RITA, "m.room.member", {"membership": "join"}, RITA)
    assert (await ingest.receive(join, "remote.test")).outcome is Outcome.ACCEPTED
    await kit.events.send(
        room,
        ALICE,
        "m.room.policy",
        {"via": "remote.test", "public_keys": {"ed25519": fake.public_key}},
        "",
    )
    spam = await remote_event(kit, room, RITA, "m.room.message", {"body": "spam spam"})
    assert (await ingest.receive(spam, "remote.test")).outcome is Outcome.SOFT_FAILED
    fine = await remote_event(kit, room, RITA, "m.room.message", {"body": "hello"})
    assert (await ingest.receive(fine, "remote.test")).outcome is Outcome.ACCEPTED
    fake.mode = "down"
    late = await remote_event(kit, room, RITA, "m.room.message", {"body": "later"})
    assert (await ingest.receive(late, "remote.test")).outcome is Outcome.SOFT_FAILED
