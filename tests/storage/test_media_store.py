"""MediaStore contract (migration 0012), on every backend: reservations and their
completion (once), pending counts and expiry, remote cache rows, thumbnails,
quarantine that spares protected media, paging a user's uploads."""

from __future__ import annotations

from homeserver.storage import Database
from homeserver.storage.media import MediaStore, RemoteMedia, Thumbnail


async def test_reservation_is_completed_once_and_expires(db: Database) -> None:
    store = MediaStore(db)
    await store.reserve("reserved0001", "@a:x", expires_ts=10_000, authenticated=True)
    assert await store.count_pending("@a:x", now=5_000) == 1
    assert await store.count_pending("@a:x", now=20_000) == 0
    media = await store.get_local("reserved0001")
    assert media is not None and media.uploaded_ts is None and media.authenticated
    assert await store.complete_upload("reserved0001", "text/plain", "a.txt", 3, "ab") is True
    assert await store.complete_upload("reserved0001", "text/plain", "b.txt", 4, "cd") is False
    media = await store.get_local("reserved0001")
    assert media is not None and media.uploaded_ts is not None and media.upload_name == "a.txt"
    assert media.unused_expires_ts is None

    await store.reserve("reserved0002", "@a:x", expires_ts=10_000, authenticated=False)
    assert await store.expire_unused(now=20_000) == 1
    assert await store.get_local("reserved0002") is None
    assert await store.get_local("reserved0001") is not None


async def test_quarantine_spares_protected_media_and_lists_page(db: Database) -> None:
    store = MediaStore(db)
    for i in range(4):
        await store.insert_uploaded(f"media000{i}", "@a:x", "image/png", None, 10 * i, "h", True)
    assert await store.set_protected("media0001", True)
    changed = await store.set_local_quarantine(
        await store.local_media_ids_of_user("@a:x"), "@adm:x"
    )
    assert changed == 3
    assert (await store.get_local("media0001")).quarantined_by is None  # type: ignore[union-attr]
    assert (await store.get_local("media0002")).quarantined_by == "@adm:x"  # type: ignore[union-attr]
    page, total = await store.local_media_of_user(
        "@a:x", start=1, limit=2, order_by="media_length", descending=True
    )
    assert total == 4 and [m.media_id for m in page] == ["media0002", "media0001"]
    before = await store.local_media_before(2**62, 5, frozenset({"media0003"}), 10)
    assert before == ["media0002"]  # 0001 protected, 0003 kept, 0000 not larger than 5


async def test_remote_cache_and_thumbnails(db: Database) -> None:
    store = MediaStore(db)
    row = RemoteMedia(
        "o.example", "rid", "fsid00000001", "image/png", "n.png", 5, 1, 100, None, True
    )
    await store.insert_remote(row)
    await store.insert_remote(
        RemoteMedia(*[*row.__dict__.values()][:2], "other", "x/y", None, 1, 1, 1, None, False)
    )
    assert await store.get_remote("o.example", "rid") == row  # the first fetch wins
    await store.touch_remote([("o.example", "rid")], 500)
    assert [m.media_id for m in await store.remote_media_before(400, 10)] == []
    assert [m.media_id for m in await store.remote_media_before(600, 10)] == ["rid"]
    thumb = Thumbnail(32, 32, "crop", "image/png", 99)
    await store.add_thumbnail("o.example", "rid", thumb)
    await store.add_thumbnail("o.example", "rid", Thumbnail(32, 32, "crop", "image/png", 100))
    assert await store.thumbnails("o.example", "rid") == [
        Thumbnail(32, 32, "crop", "image/png", 100)
    ]
    await store.delete_remote("o.example", "rid")
    assert await store.get_remote("o.example", "rid") is None
    assert await store.thumbnails("o.example", "rid") == []
