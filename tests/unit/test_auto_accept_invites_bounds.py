"""The auto-accepter's decisions, retries and bounds, on stub stores (no server): the
cases an integration test cannot reach cheaply (a flood of invites, a join refused
until the inviting server has stored its invite, a user who rejects meanwhile)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from homeserver.background import BackgroundTasks
from homeserver.config.auto_accept import AutoAcceptInvitesConfig
from homeserver.config.parse import ConfigError, parse_config
from homeserver.errors import MatrixError
from homeserver.events.event import Event
from homeserver.events.room_versions import get_room_version
from homeserver.rooms import auto_accept_invites as module
from homeserver.rooms.auto_accept_invites import InviteAutoAccepter

OURS = "ours.test"
_ids = itertools.count()


def invite(sender: str, target: str, room: str = "!r:ours.test", **content: Any) -> Event:
    pdu = {
        "type": "m.room.member",
        "room_id": room,
        "sender": sender,
        "state_key": target,
        "content": {"membership": "invite", **content},
    }
    return Event(pdu, get_room_version("10"), event_id=f"$e{next(_ids)}")


class Stubs:
    """Stores, account data and a joiner that record what the accepter did."""

    def __init__(self) -> None:
        self.membership: dict[tuple[str, str], str] = {}
        self.joins: list[tuple[str, str, list[str]]] = []
        self.refusals = 0  # joins refused (403) before one succeeds
        self.gate: asyncio.Event | None = None  # joins wait for it when set
        self.direct: dict[str, dict[str, Any]] = {}
        self.deactivated: set[str] = set()
        self.stores = SimpleNamespace(
            accounts=SimpleNamespace(get_user=self.get_user),
            current_state=SimpleNamespace(get_membership=self.get_membership),
        )

    async def get_user(self, user_id: str) -> Any:
        return SimpleNamespace(deactivated=user_id in self.deactivated, is_guest=False)

    async def get_membership(self, room_id: str, user_id: str) -> str | None:
        return self.membership.get((room_id, user_id), "invite")

    async def join(self, room_id: str, user_id: str, servers: Any = None, **_: Any) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.refusals > 0:
            self.refusals -= 1
            raise MatrixError(403, "M_FORBIDDEN", "not invited yet")
        self.joins.append((room_id, user_id, list(servers or [])))
        self.membership[(room_id, user_id)] = "join"

    async def modify(self, user_id: str, data_type: str, change: Any) -> None:
        assert data_type == "m.direct"
        new = change(self.direct.get(user_id))
        if new is not None:
            self.direct[user_id] = new

    async def unforget_room(self, user_id: str, room_id: str) -> None:
        return None


def accepter(
    stubs: Stubs, tasks: BackgroundTasks, delays: tuple[float, ...] = (0, 0, 0, 0, 0), **kw: Any
) -> InviteAutoAccepter:
    return InviteAutoAccepter(
        AutoAcceptInvitesConfig(enabled=True, **kw),
        stubs.stores,  # type: ignore[arg-type]
        stubs,  # type: ignore[arg-type]
        stubs,  # type: ignore[arg-type]
        None,
        OURS,
        tasks,
        lambda: stubs,
        delays,
    )


async def settle(tasks: BackgroundTasks) -> None:
    for _ in range(200):
        if not len(tasks):
            return
        await asyncio.sleep(0.01)


async def test_which_invites_are_accepted() -> None:
    stubs, tasks = Stubs(), BackgroundTasks()
    listener = accepter(stubs, tasks)
    stubs.deactivated.add("@gone:ours.test")
    listener.on_new_event(invite("@a:ours.test", "@b:ours.test", "!1:x"), 5)
    listener.on_new_event(invite("@a:ours.test", "@b:elsewhere.test", "!2:x"), 6)  # not ours
    listener.on_new_event(invite("@b:ours.test", "@b:ours.test", "!3:x"), 7)  # self
    listener.on_new_event(invite("@a:ours.test", "@b:ours.test", "!4:x"), -3)  # backfill
    listener.on_new_event(invite("@a:ours.test", "@gone:ours.test", "!5:x"), 8)
    listener.on_new_event(invite("@r:far.test", "@c:ours.test", "!6:x", is_direct=True), 9)
    await settle(tasks)
    assert sorted(stubs.joins) == [
        ("!1:x", "@b:ours.test", []),
        ("!6:x", "@c:ours.test", ["far.test"]),  # through the inviter's server
    ]
    assert stubs.direct == {"@c:ours.test": {"@r:far.test": ["!6:x"]}}
    await tasks.close()


async def test_restrictions() -> None:
    stubs, tasks = Stubs(), BackgroundTasks()
    dms = accepter(stubs, tasks, only_for_direct_messages=True)
    dms.on_new_event(invite("@a:ours.test", "@b:ours.test", "!plain:x"), 1)
    dms.on_new_event(invite("@a:ours.test", "@b:ours.test", "!odd:x", is_direct="yes"), 2)
    dms.on_new_event(invite("@a:ours.test", "@b:ours.test", "!dm:x", is_direct=True), 3)
    local = accepter(stubs, tasks, only_from_local_users=True)
    local.on_new_event(invite("@r:far.test", "@c:ours.test", "!far:x", is_direct=True), 4)
    local.on_new_event(invite("@a:ours.test", "@c:ours.test", "!near:x"), 5)
    await settle(tasks)
    assert sorted(room for room, _, _ in stubs.joins) == ["!dm:x", "!near:x"]
    await tasks.close()


async def test_the_join_is_retried_until_the_inviting_server_agrees() -> None:
    stubs, tasks = Stubs(), BackgroundTasks()
    stubs.refusals = 3
    accepter(stubs, tasks).on_new_event(invite("@r:far.test", "@b:ours.test", "!1:x"), 1)
    await settle(tasks)
    assert stubs.joins == [("!1:x", "@b:ours.test", ["far.test"])] and stubs.refusals == 0
    # Five refusals: Synapse's five attempts are spent, the invite stays for the user.
    stubs.refusals = 5
    accepter(stubs, tasks).on_new_event(invite("@r:far.test", "@b:ours.test", "!2:x"), 2)
    await settle(tasks)
    assert stubs.refusals == 0 and len(stubs.joins) == 1
    assert await stubs.get_membership("!2:x", "@b:ours.test") == "invite"
    assert module.RETRY_DELAYS_S == (0.0, 1.0, 2.0, 4.0, 8.0)
    await tasks.close()


async def test_an_invite_rejected_meanwhile_is_not_joined() -> None:
    stubs, tasks = Stubs(), BackgroundTasks()
    stubs.refusals = 1
    listener = accepter(stubs, tasks, delays=(0, 0.2, 0.2))
    listener.on_new_event(invite("@r:far.test", "@b:ours.test", "!1:x"), 1)
    await asyncio.sleep(0.1)  # the first attempt was refused; the user rejects
    stubs.membership[("!1:x", "@b:ours.test")] = "leave"
    await settle(tasks)
    assert stubs.joins == [] and stubs.refusals == 0
    await tasks.close()


async def test_a_flood_of_remote_invites_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "MAX_PENDING", 30)
    monkeypatch.setattr(module, "MAX_PENDING_PER_SERVER", 10)
    stubs, tasks = Stubs(), BackgroundTasks()
    stubs.gate = asyncio.Event()  # joins hang until released
    listener = accepter(stubs, tasks)
    for i in range(50):  # one hostile server
        listener.on_new_event(invite("@spam:evil.test", f"@u{i}:ours.test", f"!e{i}:x"), i + 1)
    assert len(tasks) == 10
    for i in range(50):  # local invites still get in, up to the whole bound
        listener.on_new_event(invite("@a:ours.test", f"@u{i}:ours.test", f"!l{i}:x"), 100 + i)
    assert len(tasks) == 30
    stubs.gate.set()
    await settle(tasks)
    rooms = [room for room, _, _ in stubs.joins]
    assert len(rooms) == 30 and sum(r.startswith("!e") for r in rooms) == 10
    # Once drained, the hostile server's next invite is taken again.
    listener.on_new_event(invite("@spam:evil.test", "@u0:ours.test", "!again:x"), 999)
    await settle(tasks)
    assert stubs.joins[-1][0] == "!again:x"
    await tasks.close()


def test_the_section_is_read_and_checked(tmp_path: Path) -> None:
    config = parse_config(
        {
            "server_name": "a.b",
            "auto_accept_invites": {
                "enabled": True,
                "only_for_direct_messages": True,
                "only_from_local_users": False,
                "worker_to_run_on": None,
            },
        },
        base_dir=tmp_path,
    )
    assert config.auto_accept_invites == AutoAcceptInvitesConfig(True, True, False, None)
    assert "auto_accept_invites" not in config.ignored_keys
    default = parse_config({"server_name": "a.b", "auto_accept_invites": None}, base_dir=tmp_path)
    assert default.auto_accept_invites == AutoAcceptInvitesConfig()
    with pytest.raises(ConfigError) as exc:
        parse_config(
            {"server_name": "a.b", "auto_accept_invites": {"enabled": "yes", "only_dms": True}},
            base_dir=tmp_path,
        )
    problems = " ".join(exc.value.problems)
    assert "auto_accept_invites.enabled" in problems
    assert "auto_accept_invites.only_dms" in problems
