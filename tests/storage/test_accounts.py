"""AccountStore contract: users, profiles, devices, tokens and the token cache."""

from __future__ import annotations

import pytest

from homeserver.storage import AccountStore, IntegrityError, Stores

ALICE = "@alice:example.org"


async def test_users(stores: Stores) -> None:
    acc = stores.accounts
    assert await acc.create_user(ALICE, "hash1", created_ts=1000, displayname="Alice") is True
    assert await acc.create_user(ALICE, "other") is False
    assert await acc.user_id_taken(ALICE) and not await acc.user_id_taken("@nobody:x")
    u = await acc.get_user(ALICE)
    assert (u.user_id, u.password_hash, u.created_ts, u.is_admin, u.deactivated, u.is_guest) == (
        ALICE,
        "hash1",
        1000,
        False,
        False,
        False,
    )
    assert await acc.get_user("@nobody:x") is None
    assert await acc.set_password_hash(ALICE, "hash2") is True
    assert (await acc.get_user(ALICE)).password_hash == "hash2"
    assert await acc.set_password_hash("@nobody:x", "h") is False
    await acc.set_admin(ALICE, True)
    assert (await acc.get_user(ALICE)).is_admin is True
    await acc.create_user("@guest:example.org", None, is_guest=True)
    assert (await acc.get_user("@guest:example.org")).is_guest is True


async def test_profiles_and_search(stores: Stores) -> None:
    acc = stores.accounts
    await acc.create_user(ALICE, None, displayname="Alice Liddell")
    await acc.create_user("@bob:example.org", None, displayname="Bobby 100%")
    await acc.create_user("@carol_x:example.org", None)
    await acc.create_user("@guest1:example.org", None, is_guest=True, displayname="Alice guest")
    await acc.set_avatar_url(ALICE, "mxc://example.org/abc")
    await acc.set_profile_field(ALICE, "m.tz", "Europe/London")
    await acc.set_profile_field(ALICE, "org.x", {"n": 1})
    await acc.set_profile_field(ALICE, "org.x", None)
    p = await acc.get_profile(ALICE)
    assert (p.displayname, p.avatar_url, p.custom) == (
        "Alice Liddell",
        "mxc://example.org/abc",
        {"m.tz": "Europe/London"},
    )
    await acc.set_displayname(ALICE, None)
    assert (await acc.get_profile(ALICE)).displayname is None
    await acc.set_displayname(ALICE, "Alice Liddell")
    assert await acc.get_profile("@nobody:x") is None

    assert [r.user_id for r in await acc.search_users("LIDDELL")] == [ALICE]
    assert [r.user_id for r in await acc.search_users("example.org")] == [
        ALICE,
        "@bob:example.org",
        "@carol_x:example.org",
    ]
    assert [r.user_id for r in await acc.search_users("example.org", limit=1)] == [ALICE]
    # LIKE wildcards in the term are literal.
    assert [r.user_id for r in await acc.search_users("100%")] == ["@bob:example.org"]
    assert [
        r.user_id for r in await acc.search_users("a_o")
    ] == []  # "aro" only if _ were a wildcard
    assert [r.user_id for r in await acc.search_users("carol_x")] == ["@carol_x:example.org"]
    assert (await acc.search_users("alice"))[0].avatar_url == "mxc://example.org/abc"
    await acc.deactivate(ALICE)
    assert [r.user_id for r in await acc.search_users("alice")] == []


async def test_devices(stores: Stores) -> None:
    acc = stores.accounts
    await acc.create_user(ALICE, None)
    assert await acc.upsert_device(ALICE, "DEV1", "Phone") is True
    assert await acc.upsert_device(ALICE, "DEV1") is False
    assert (await acc.get_device(ALICE, "DEV1")).display_name == "Phone"
    assert await acc.upsert_device(ALICE, "DEV1", "New phone") is False
    await acc.upsert_device(ALICE, "DEV0")
    await acc.update_device_last_seen(ALICE, "DEV1", 5000, "10.0.0.1")
    d = await acc.get_device(ALICE, "DEV1")
    assert (d.display_name, d.last_seen_ts, d.last_seen_ip) == ("New phone", 5000, "10.0.0.1")
    assert [d.device_id for d in await acc.get_devices(ALICE)] == ["DEV0", "DEV1"]
    assert await acc.set_device_display_name(ALICE, "DEV0", "Laptop") is True
    assert await acc.set_device_display_name(ALICE, "NOPE", "x") is False
    assert await acc.delete_device(ALICE, "DEV0") is True
    assert await acc.delete_device(ALICE, "DEV0") is False
    assert await acc.get_device(ALICE, "DEV0") is None
    with pytest.raises(IntegrityError):  # devices belong to existing users
        await acc.upsert_device("@ghost:x", "D")


async def test_tokens_and_cache_invalidation(stores: Stores) -> None:
    acc = stores.accounts
    await acc.create_user(ALICE, None)
    await acc.upsert_device(ALICE, "D1")
    await acc.upsert_device(ALICE, "D2")
    t1 = await acc.add_access_token("tok1", ALICE, "D1", valid_until_ms=99)
    t2 = await acc.add_access_token("tok2", ALICE, "D2")
    t3 = await acc.add_access_token("tok3", ALICE, "D2")
    info = await acc.get_token("tok1")
    assert (info.token_id, info.user_id, info.device_id, info.valid_until_ms) == (
        t1,
        ALICE,
        "D1",
        99,
    )
    assert await acc.get_token("nope") is None
    for t in ("tok2", "tok3"):
        assert await acc.get_token(t) is not None  # now cached

    assert await acc.delete_access_token("tok1") is True
    assert await acc.get_token("tok1") is None
    assert await acc.delete_access_tokens_for_device(ALICE, "D2") == 2
    assert await acc.get_token("tok2") is None and await acc.get_token("tok3") is None
    assert t2 != t3

    keep = await acc.add_access_token("keep", ALICE, "D1")
    await acc.add_access_token("drop", ALICE, "D2")
    assert await acc.get_token("drop") is not None
    assert await acc.delete_access_tokens_for_user(ALICE, except_token_id=keep) == 1
    assert await acc.get_token("drop") is None
    assert (await acc.get_token("keep")).token_id == keep

    # Another AccountStore (e.g. another worker) sees the deletion in the database.
    assert await AccountStore(stores.db).get_token("drop") is None

    await acc.delete_device(ALICE, "D1")
    assert await acc.get_token("keep") is None


async def test_refresh_tokens(stores: Stores) -> None:
    acc = stores.accounts
    await acc.create_user(ALICE, None)
    rt = await acc.add_refresh_token("refresh1", ALICE, "D1")
    await acc.add_access_token("acc1", ALICE, "D1", refresh_token_id=rt, valid_until_ms=10)
    r = await acc.get_refresh_token("refresh1")
    assert (r.token_id, r.user_id, r.device_id) == (rt, ALICE, "D1")
    assert (await acc.get_token("acc1")).refresh_token_id == rt
    assert await acc.delete_refresh_token(rt) is True
    assert await acc.get_refresh_token("refresh1") is None
    assert await acc.get_token("acc1") is None


async def test_deactivate_removes_credentials(stores: Stores) -> None:
    acc = stores.accounts
    await acc.create_user(ALICE, "hash")
    await acc.upsert_device(ALICE, "D1")
    await acc.add_access_token("t", ALICE, "D1")
    await acc.add_refresh_token("r", ALICE, "D1")
    assert await acc.get_token("t") is not None
    assert await acc.deactivate(ALICE) is True
    u = await acc.get_user(ALICE)
    assert u.deactivated and u.password_hash is None
    assert await acc.get_token("t") is None
    assert await acc.get_refresh_token("r") is None
    assert await acc.get_devices(ALICE) == []
    assert await acc.user_id_taken(ALICE)  # IDs are never reused
