"""What a federation inbound worker makes of its writers' answers (issue 16,
homeserver/replication/federation.py RoutedIngest): an outage must refuse the whole
transaction (503, the peer retries), a writer's failure on what it was given must be
each PDU's error (as a local ingest that raised), never a PDU silently without result."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.events import Event, get_room_version
from homeserver.events.builder import build_event
from homeserver.events.signing import generate_signing_key
from homeserver.replication.federation import EVENTS_PATH, RoutedIngest, WriterUnavailable
from homeserver.replication.forward import Unreachable

PERSISTER, MAIN = "http://persister", None


class FakeForwarder:
    """Answers by destination: a (status, body) or an exception to raise."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str | None, str]] = []

    async def call(self, to: str | None, path: str, body: dict[str, Any]) -> Any:
        self.calls.append((to, path))
        answer = self.answers["persister" if to == PERSISTER else "main"]
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
