"""What a federation inbound worker makes of its writers' answers (issue 16,
homeserver/replication/federation.py RoutedIngest): an outage must refuse the whole
transaction (503, the peer retries), a writer's failure on what it was given must be
each PDU's error (as a local ingest that raised), never a PDU silently without result.
EDUs go to a writer of their stream (the readers named for it, then the main); when
none takes them, typing and presence are dropped and the durable ones refuse the
transaction."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.events import Event, get_room_version
from homeserver.events.builder import build_event
from homeserver.events.signing import generate_signing_key
from homeserver.replication.federation import (
    EDUS_PATH,
    EVENTS_PATH,
    RoutedIngest,
    WriterUnavailable,
)
from homeserver.replication.forward import Unreachable

PERSISTER, MAIN = "http://persister", None


class FakeForwarder:
    """Answers by destination: a (status, body) or an exception to raise."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str | None, str]] = []
        self.bodies: list[tuple[str | None, Any]] = []

    async def call(self, to: str | None, path: str, body: dict[str, Any]) -> Any:
        self.calls.append((to, path))
        self.bodies.append((to, body))
        name = "main" if to is None else to.removeprefix("http://")
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        return answer


def events(n: int) -> list[Event]:
    version = get_room_version("11")
    key = generate_signing_key("k")
    return [
        build_event(
            version,
            room_id="!r:remote.test",
            sender="@u:remote.test",
            type="m.room.message",
            content={"body": str(i)},
            state_key=None,
            prev_event_ids=["$" + "P" * 43],
            auth_event_ids=["$" + "A" * 43],
            depth=i + 2,
            origin_server_ts=1,
            server_name="remote.test",
            signing_key=key,
        )  # fmt: skip
        for i in range(n)
    ]


async def receive(forwarder: FakeForwarder, count: int = 2) -> list[str | None]:
    routed = RoutedIngest(forwarder, lambda _room: PERSISTER)  # type: ignore[arg-type]
    return await routed.receive_all(events(count), "remote.test")


async def test_the_persisters_answer_is_each_pdus_result() -> None:
    forwarder = FakeForwarder(persister=(200, {"errors": [None, "Rejected: no"]}))
    assert await receive(forwarder) == [None, "Rejected: no"]
    assert forwarder.calls == [(PERSISTER, EVENTS_PATH)]


async def test_an_unreachable_persister_is_replaced_by_the_main() -> None:
    forwarder = FakeForwarder(persister=Unreachable(PERSISTER), main=(200, {"errors": [None]}))
    assert await receive(forwarder, 1) == [None]
    assert forwarder.calls == [(PERSISTER, EVENTS_PATH), (MAIN, EVENTS_PATH)]


@pytest.mark.parametrize(
    "main",
    [Unreachable("main"), (503, {"errcode": "M_UNKNOWN"}), (502, None), (200, {"errors": []})],
    ids=["main-unreachable", "database-away", "proxy-error", "wrong-answer"],
)
async def test_an_outage_refuses_the_transaction(main: Any) -> None:
    with pytest.raises(WriterUnavailable):
        await receive(FakeForwarder(persister=Unreachable(PERSISTER), main=main))


@pytest.mark.parametrize("status", [500, 400, 404])
async def test_a_writer_failing_on_the_pdus_gives_each_an_error(status: int) -> None:
    forwarder = FakeForwarder(persister=(status, {"errcode": "M_UNKNOWN"}))
    assert await receive(forwarder, 3) == [f"Failed to process event: {status}"] * 3


READERS = ("http://reader1", "http://reader2")


def edu(kind: str, n: int = 0) -> dict[str, Any]:
    return {"edu_type": kind, "content": {"n": n}}


async def route_edus(forwarder: FakeForwarder, edus: list[Any]) -> None:
    def writers(stream: str, _origin: str) -> list[str]:
        return list(READERS) if stream != "presence" else []

    routed = RoutedIngest(forwarder, lambda _room: None, writers)  # type: ignore[arg-type]
    await routed.edus("remote.test", edus)


def sent(forwarder: FakeForwarder) -> dict[str | None, list[str]]:
    """Where each EDU type went (the answered calls)."""
    out: dict[str | None, list[str]] = {}
    for to, body in forwarder.bodies:
        answer = forwarder.answers["main" if to is None else to.removeprefix("http://")]
        if not isinstance(answer, Exception):
            out.setdefault(to, []).extend(e["edu_type"] for e in body["edus"])
    return out


async def test_each_streams_edus_go_to_its_writer_in_one_request() -> None:
    forwarder = FakeForwarder(reader1=(200, {}), reader2=(200, {}), main=(200, {}))
    kinds = ["m.typing", "m.receipt", "m.direct_to_device", "m.device_list_update",
             "m.signing_key_update", "m.presence", "org.example.unknown"]  # fmt: skip
    await route_edus(forwarder, [edu(k, i) for i, k in enumerate(kinds)] + [edu("m.typing", 9)])
    assert {to for to, _path in forwarder.calls} == {READERS[0], None}
    assert all(path == EDUS_PATH for _to, path in forwarder.calls)
    assert len(forwarder.calls) == 5  # one per stream: typing, receipts, to-device, keys, presence
    assert sorted(sent(forwarder)[READERS[0]]) == sorted(
        ["m.typing", "m.typing", "m.receipt", "m.direct_to_device", "m.device_list_update",
         "m.signing_key_update"]
    )  # fmt: skip
    assert sent(forwarder)[None] == ["m.presence"]  # the main alone holds presence


async def test_an_unreachable_writer_is_replaced_by_the_next_then_the_main() -> None:
    forwarder = FakeForwarder(
        reader1=Unreachable("reader1"), reader2=(503, {"errcode": "M_UNKNOWN"}), main=(200, {})
    )
    await route_edus(forwarder, [edu("m.receipt")])
    assert forwarder.calls == [(READERS[0], EDUS_PATH), (READERS[1], EDUS_PATH), (None, EDUS_PATH)]


async def test_with_no_writer_ephemeral_edus_are_dropped_durable_ones_refuse() -> None:
    down = {"reader1": Unreachable("r1"), "reader2": Unreachable("r2"), "main": Unreachable("m")}
    await route_edus(FakeForwarder(**down), [edu("m.typing"), edu("m.presence")])
    for durable in ("m.receipt", "m.direct_to_device", "m.device_list_update"):
        forwarder = FakeForwarder(**down)
        with pytest.raises(WriterUnavailable):
            await route_edus(forwarder, [edu("m.typing"), edu(durable)])
        assert (None, EDUS_PATH) in forwarder.calls  # every writer was tried first


async def test_a_writer_failing_on_the_edus_is_not_asked_again() -> None:
    forwarder = FakeForwarder(reader1=(500, {"errcode": "M_UNKNOWN"}), main=(200, {}))
    await route_edus(forwarder, [edu("m.direct_to_device")])
    assert forwarder.calls == [(READERS[0], EDUS_PATH)]  # a bug there, logged: no duplicate
