"""TypingService positions, and state replicated from other processes
(homeserver/ephemeral/typing.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from homeserver.ephemeral.typing import TypingService
from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import StreamToken


def _service() -> tuple[TypingService, Notifier]:
    notifier = Notifier(StreamToken())
    outbox: Any = None  # set_remote and replicate send nothing
    return TypingService(stores=None, notifier=notifier, outbox=outbox, server_name="hs"), notifier  # type: ignore[arg-type]


async def test_a_restarted_service_numbers_above_the_previous_run() -> None:
    first, _ = _service()
    for i in range(50):
        first.set_remote("!r:x", f"@u{i}:x", True)
    before = first.position
    first.close()
    await asyncio.sleep(0.01)  # a restart takes longer than that
    again, notifier = _service()  # nothing remembered
    again.set_remote("!r:x", "@u:x", True)
    assert again.position > before
    assert again.position >= int(time.time() * 1_000_000) - 1_000_000
    assert again.position < 2**53  # exact in a JavaScript client
    assert notifier.current.typing == again.position
    again.close()


async def test_forget_replicated_drops_only_what_another_process_announced() -> None:
    service, notifier = _service()
    service.replicate("!theirs:x", ["@a:x"], 1_000)
    service.set_remote("!ours:x", "@b:x", True)  # with a timer: this process keeps it
    mark = service.position
    service.forget_replicated()
    assert service.typing_users("!theirs:x") == []
    assert service.typing_users("!ours:x") == ["@b:x"]
    assert service.room_position("!theirs:x") > mark  # clients are told: nobody types
    assert notifier.current.typing == service.room_position("!theirs:x")
    service.close()


async def test_a_replicated_change_ends_by_its_own_timer_without_announcing_it() -> None:
    service, notifier = _service()
    announced: list[tuple[int, bool]] = []
    notifier.observers.append(lambda s, p, u, r: announced.append((p, notifier.replaying)))
    service.apply_replicated("!r:x", "@a:x", True, 50)  # set by another process
    assert service.typing_users("!r:x") == ["@a:x"]
    await asyncio.sleep(0.2)
    assert service.typing_users("!r:x") == []  # our own timer ended it
    # Both changes reached our clients; the expiry is not ours to announce again.
    assert [replaying for _, replaying in announced] == [False, True]
    assert service.last_change == ("!r:x", "@a:x", False, 0)
    service.set_remote("!r:x", "@b:x", True, 50)  # ours: its expiry is announced
    await asyncio.sleep(0.2)
    assert [replaying for _, replaying in announced][2:] == [False, False]
    service.close()
