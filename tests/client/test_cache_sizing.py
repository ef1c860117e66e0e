"""Synapse's cache settings size the caches a server builds: caches.global_factor,
caches.per_cache_factors (by cache name) and event_cache_size; two servers in one
process each keep their own sizes; bad values are refused; Synapse's other caches
keys are accepted and named in the startup warning."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.app import create_app
from homeserver.appstate import STORES
from homeserver.config import ConfigError, parse_config
from tests import deployment_mode


def _sizes(client: Any) -> dict[str, int]:
    stores = client.app[STORES]
    return {
        "getEvent": stores.events._cache.max_size,
        "get_users_in_room": stores.current_state._joined.max_size,
    }


@pytest.mark.skipif(
    bool(deployment_mode.MODE), reason="reads the sizes of the caches in the server's memory"
)
async def test_caches_take_the_operators_sizes(aiohttp_client: Any, tmp_config: Any) -> None:
    tuned = await aiohttp_client(
        create_app(
            tmp_config(
                caches={"global_factor": 0.5, "per_cache_factors": {"get_users_in_room": 3}},
                event_cache_size="20K",
            )
        )
    )
    default = await aiohttp_client(create_app(tmp_config()))
    assert _sizes(default) == {"getEvent": 10_000, "get_users_in_room": 10_000}
    # event_cache_size is the base, the global factor halves it; the per-cache factor
    # replaces the global one for its cache.
    assert _sizes(tuned) == {"getEvent": 10_240, "get_users_in_room": 30_000}


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"caches": {"global_factor": 0}}, "caches.global_factor"),
        ({"caches": {"per_cache_factors": {"getEvent": "big"}}}, "per_cache_factors.getEvent"),
        ({"caches": {"global_factr": 2}}, "caches.global_factr"),
        ({"event_cache_size": 0}, "event_cache_size"),
    ],
)
def test_bad_cache_settings_are_refused(tmp_path: Any, settings: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config({"server_name": "example.org", **settings}, base_dir=tmp_path)


def test_synapse_only_cache_keys_are_named_in_the_warning(tmp_path: Any) -> None:
    config = parse_config(
        {"server_name": "example.org", "caches": {"expire_caches": False, "global_factor": 2}},
        base_dir=tmp_path,
    )
    assert "caches.expire_caches" in config.ignored_keys
    assert config.caches.global_factor == 2.0
