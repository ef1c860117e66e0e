"""The `retention:` section (Synapse's keys): defaults, the example config's values,
every mistake reported with its key path, and how a room's lifetime is applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from homeserver.config import ConfigError, parse_config
from homeserver.config.retention import PurgeJob, RetentionSettings
from homeserver.config_template import generate_config

DAY = 86_400_000
HOUR = 3_600_000


def parse(**top: Any) -> Any:
    return parse_config({"server_name": "example.org", **top}, base_dir=Path("/tmp"))


def problems(**top: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(**top)
    return info.value.problems


def test_defaults_are_synapses() -> None:
    settings = parse().retention
    assert settings == RetentionSettings()
    assert settings.enabled is False and settings.default_max_lifetime_ms is None
    assert settings.purge_jobs == (PurgeJob(DAY, None, None),)  # daily, every room
    assert "retention" not in parse(retention={"enabled": True}).ignored_keys
    assert parse(retention={"purge_jobs": []}).retention.purge_jobs == (PurgeJob(DAY),)


def test_the_example_config_block_parses_when_uncommented() -> None:
    text = generate_config("example.org", "data", open_registration=True)
    start = text.index("#retention:")
    block = []
    for line in text[start:].splitlines():
        if not line.startswith("#"):
            break
        block.append(line[1:])
    settings = parse(**yaml.safe_load("\n".join(block))).retention
    assert settings.default_min_lifetime_ms == DAY
    assert settings.default_max_lifetime_ms == 365 * DAY
    assert (settings.allowed_lifetime_min_ms, settings.allowed_lifetime_max_ms) == (DAY, 365 * DAY)
    assert settings.purge_jobs == (
        PurgeJob(12 * HOUR, None, 3 * DAY),
        PurgeJob(DAY, 3 * DAY, None),
    )


def test_every_mistake_is_reported_with_its_path() -> None:
    found = problems(
        retention={
            "enabled": "yes",
            "default_policy": {"min_lifetime": "2d", "max_lifetime": "1d", "typo": 1},
            "allowed_lifetime_min": "1y",
            "allowed_lifetime_max": "1d",
            "purge_jobs": [
                {"shortest_max_lifetime": "1d"},
                {"interval": "1d", "shortest_max_lifetime": "3d", "longest_max_lifetime": "1d"},
                {"interval": 0},
                {"interval": "often"},
                "daily",
            ],
            "max_lifetime": "1d",
        }
    )
    text = "\n".join(found)
    for expected in (
        "retention.enabled: expected true or false",
        "retention.default_policy.typo: unknown key",
        "retention.default_policy.min_lifetime: can not be greater than max_lifetime",
        "retention.allowed_lifetime_min: can not be greater than allowed_lifetime_max",
        "retention.purge_jobs[0].interval: required",
        "retention.purge_jobs[1].shortest_max_lifetime: can not be greater than",
        "retention.purge_jobs[2].interval: must be more than 0",
        "retention.purge_jobs[3].interval: expected a duration",
        "retention.purge_jobs[4]: expected a mapping",
        "retention.max_lifetime: unknown key",
    ):
        assert expected in text, f"{expected!r} not in {found}"
    assert len(found) == 10


def test_a_rooms_lifetime_is_clamped_for_purges_and_capped_for_clients() -> None:
    s = RetentionSettings(
        enabled=True,
        default_max_lifetime_ms=30 * DAY,
        allowed_lifetime_min_ms=DAY,
        allowed_lifetime_max_ms=365 * DAY,
    )
    assert s.purge_lifetime(None) == 30 * DAY  # the default policy
    assert s.purge_lifetime(HOUR) == DAY  # raised to the allowed minimum
    assert s.purge_lifetime(1000 * DAY) == 365 * DAY  # lowered to the allowed maximum
    assert s.hidden_after(HOUR) == HOUR  # users stop seeing it when the room says
    assert s.hidden_after(1000 * DAY) == 365 * DAY  # and never past what is purged
    assert RetentionSettings(enabled=False, default_max_lifetime_ms=DAY).hidden_after(None) is None
    assert RetentionSettings(enabled=True).purge_lifetime(None) is None  # kept forever


def test_purge_job_ranges_are_exclusive_below_and_inclusive_above() -> None:
    job = PurgeJob(DAY, 3 * DAY, 7 * DAY)
    assert not job.covers(3 * DAY) and job.covers(3 * DAY + 1) and job.covers(7 * DAY)
    assert not job.covers(7 * DAY + 1)
    assert PurgeJob(DAY).covers(0) and PurgeJob(DAY).covers(10**15)
