"""The sync notifier: who gets woken, and that positions only move forward."""

from __future__ import annotations

import asyncio

from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import StreamToken


async def test_wakes_only_listeners_of_the_room_or_user() -> None:
    notifier = Notifier()
    with (
        notifier.listen("@a:x", ["!r1:x"]) as a,
        notifier.listen("@b:x", ["!r2:x"]) as b,
        notifier.listen("@c:x", []) as c,
    ):
        notifier.notify("events", 5, rooms=["!r1:x"])
        assert a.woken and not b.woken and not c.woken
        notifier.notify("to_device", 2, users=["@c:x"])
        assert c.woken and not b.woken
    assert notifier.current == StreamToken(events=5, to_device=2)


async def test_positions_never_go_back() -> None:
    notifier = Notifier(StreamToken(events=10))
    notifier.notify("events", 3)
    notifier.advance("typing", 4)
    notifier.advance("typing", 2)
    assert notifier.current == StreamToken(events=10, typing=4)


async def test_wait_times_out_then_is_woken_later() -> None:
    notifier = Notifier()
    with notifier.listen("@a:x", ["!r:x"]) as listener:
        assert await listener.wait(0.01) is False
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, lambda: notifier.notify("receipts", 1, rooms=["!r:x"]))
        assert await listener.wait(1) is True


async def test_listeners_are_removed_on_exit() -> None:
    notifier = Notifier()
    with notifier.listen("@a:x", ["!r:x"]):
        pass
    assert notifier._by_user == {} and notifier._by_room == {}
    notifier.notify("events", 1, users=["@a:x"], rooms=["!r:x"])  # nobody to wake: fine


async def test_a_listener_in_many_rooms_is_woken_by_any_of_them() -> None:
    """Users in more rooms than WIDE_ROOMS are checked by set membership, not entered
    in every room's set: they are woken all the same, and discarded cleanly."""
    from homeserver.sync.notifier import WIDE_ROOMS

    notifier = Notifier()
    rooms = [f"!r{i}:x" for i in range(WIDE_ROOMS + 50)]
    with notifier.listen("@big:x", rooms) as big, notifier.listen("@small:x", rooms[:3]) as small:
        notifier.notify("events", 1, rooms=iter(["!elsewhere:x"]))
        assert not big.woken and not small.woken
        notifier.notify("events", 2, rooms=iter([rooms[-1]]))  # a generator: read once
        assert big.woken and not small.woken
    with notifier.listen("@big:x", rooms) as again:
        notifier.notify("events", 3, rooms=[rooms[1]])
        assert again.woken
    assert not notifier._wide and not notifier._by_room  # nothing left behind
