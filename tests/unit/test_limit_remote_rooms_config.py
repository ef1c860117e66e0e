"""`limit_remote_rooms` (Synapse's key) is read with Synapse's defaults and checked, and
the complexity lookup over federation stays bounded: a slow, broken or oversized
answer is passed over, never waited on past the deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from federation.client import MAX_SMALL_RESPONSE_BYTES, FederationError, max_response_bytes
from federation.room_complexity import FederationRoomComplexity
from homeserver.config import ConfigError, parse_config
from homeserver.config.room_complexity import DEFAULT_COMPLEXITY_ERROR


def _parse(tmp_path: Path, section: Any) -> Any:
    raw = {"server_name": "a.b", "limit_remote_rooms": section}
    return parse_config(raw, base_dir=tmp_path).limit_remote_rooms


def test_defaults_are_synapses(tmp_path: Path) -> None:
    config = parse_config({"server_name": "a.b"}, base_dir=tmp_path)
    limit = config.limit_remote_rooms
    assert (limit.enabled, limit.complexity, limit.admins_can_join) == (False, 1.0, False)
    assert limit.complexity_error == DEFAULT_COMPLEXITY_ERROR
    # Understood now, so no longer listed as an ignored Synapse key.
    with_section = parse_config(
        {"server_name": "a.b", "limit_remote_rooms": {"enabled": True}}, base_dir=tmp_path
    )
    assert "limit_remote_rooms" not in with_section.ignored_keys
    assert with_section.limit_remote_rooms.enabled is True


def test_every_setting_is_read(tmp_path: Path) -> None:
    limit = _parse(
        tmp_path,
        {"enabled": True, "complexity": 2, "complexity_error": "Too big", "admins_can_join": True},
    )
    assert (limit.enabled, limit.complexity, limit.complexity_error, limit.admins_can_join) == (
        True,
        2.0,
        "Too big",
        True,
    )
    assert _parse(tmp_path, {"complexity": 0.25}).complexity == 0.25


def test_mistakes_are_config_errors(tmp_path: Path) -> None:
    bad = {
        "enabled": "yes",
        "complexity": "1.0",
        "complexity_error": 5,
        "admins_can_join": 1,
        "admin_can_join": True,
    }
    with pytest.raises(ConfigError) as info:
        _parse(tmp_path, bad)
    assert info.value.problems == [
        "<config>: limit_remote_rooms.admin_can_join: unknown key (did you mean "
        "'admins_can_join'?)",
        "<config>: limit_remote_rooms.complexity: expected a number, got a string ('1.0')",
        "<config>: limit_remote_rooms.enabled: expected true or false, got a string ('yes')",
        "<config>: limit_remote_rooms.complexity_error: expected a non-empty string, got an "
        "integer (5)",
        "<config>: limit_remote_rooms.admins_can_join: expected true or false, got an integer (1)",
    ]
    for value, why in ((-1, "got -1"), (float("nan"), "got nan"), (True, "a boolean")):
        with pytest.raises(ConfigError) as info:
            _parse(tmp_path, {"complexity": value})
        assert len(info.value.problems) == 1 and why in info.value.problems[0]
    with pytest.raises(ConfigError) as info:
        _parse(tmp_path, ["enabled"])
    assert info.value.problems == [
        "<config>: limit_remote_rooms: expected a mapping, got a list (['enabled'])"
    ]


def test_complexity_answers_are_read_small() -> None:
    path = "/_matrix/federation/unstable/rooms/%21r%3Ab/complexity"
    assert max_response_bytes(path) == MAX_SMALL_RESPONSE_BYTES == 64 * 1024
    assert max_response_bytes("/_matrix/federation/v1/state/%21r%3Ab") > 64 * 1024


class _Peers:
    """A federation client whose peers answer from `answers` (server -> body, an
    exception to raise, or "hang")."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, float | None]] = []

    async def get_json(self, server: str, path: str, *, timeout: float | None = None) -> Any:
        self.asked.append((server, path, timeout))
        answer = self.answers[server]
        if answer == "hang":
            await asyncio.sleep(3600)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_lookup_passes_over_failures_and_bad_answers() -> None:
    refused = FederationError(404, "M_INVALID_PARAM", {"errcode": "M_INVALID_PARAM"})
    peers = _Peers(
        {
            "a": refused,
            "b": {"v1": "big"},
            "c": [1],
            "d": {"v1": float("inf")},
            "e": {"v1": 3.5},
            "f": {"v1": 0.5},
        }
    )
    lookup = FederationRoomComplexity(peers, timeout_s=2.0)
    assert await lookup.get_room_complexity(["a", "b", "c", "d", "e", "f"], "!r:x") == 3.5
    assert [s for s, _p, _t in peers.asked] == ["a", "b", "c", "d", "e"]
    assert peers.asked[0][1] == "/_matrix/federation/unstable/rooms/%21r%3Ax/complexity"
    assert {t for _s, _p, t in peers.asked} == {2.0}
    assert await lookup.get_room_complexity(["a", "b"], "!r:x") is None


async def test_lookup_gives_up_at_the_deadline() -> None:
    peers = _Peers({"slow": "hang", "never": {"v1": 9.0}})
    lookup = FederationRoomComplexity(peers, timeout_s=5.0, deadline_s=0.2)
    started = asyncio.get_running_loop().time()
    assert await lookup.get_room_complexity(["slow", "never"], "!r:x") is None
    assert asyncio.get_running_loop().time() - started < 2.0
    assert [s for s, _p, _t in peers.asked] == ["slow"]
