"""Transaction IDs are kept a day (storage/txn_retention.py), on both backends."""

from __future__ import annotations

from homeserver.storage.database import Database
from homeserver.storage.stores import Stores
from homeserver.storage.to_device import ToDeviceMessage, ToDeviceStore
from homeserver.storage.txn_retention import TXN_RETENTION_MS, TransactionIdRetention

NOW = 1_700_000_000_000


async def test_only_transaction_ids_older_than_a_day_go(db: Database, stores: Stores) -> None:
    tx = stores.transactions
    to_device = ToDeviceStore(db)
    for i in range(5):
        await tx.set_client_txn("@a:x", "D1", f"old{i}", f"$old{i}")
        await tx.set_inbound_txn("remote.test", f"old{i}", {"pdus": {}})
        message = ToDeviceMessage("@b:x", "D2", "@a:x", "m.test", {"i": i})
        await to_device.add_messages([message], ("@a:x", "D1", f"old{i}"))
    for table, column in (
        ("client_txns", "created_ts"),
        ("to_device_txns", "created_ts"),
        ("federation_inbound_txns", "received_ts"),
    ):
        await db.execute(f"UPDATE {table} SET {column} = $1", NOW - TXN_RETENTION_MS - 1)
    await tx.set_client_txn("@a:x", "D1", "new", "$new")
    await tx.set_inbound_txn("remote.test", "new", {"pdus": {}})
    await db.execute("UPDATE client_txns SET created_ts = $1 WHERE txn_id = 'new'", NOW)
    await db.execute(
        "UPDATE federation_inbound_txns SET received_ts = $1 WHERE txn_id = 'new'", NOW
    )

    deleted = await TransactionIdRetention(db, batch_rows=2, pause_s=0).run(NOW)
    assert deleted == {"client_txns": 5, "to_device_txns": 5, "federation_inbound_txns": 5}
    assert await tx.get_client_txn("@a:x", "D1", "old0") is None
    assert await tx.get_client_txn("@a:x", "D1", "new") == "$new"
    assert await tx.get_inbound_txn("remote.test", "old4") is None
    assert await tx.get_inbound_txn("remote.test", "new") == {"pdus": {}}
    assert await db.fetchval("SELECT COUNT(*) FROM to_device_txns") == 0
    # The messages themselves are not transaction IDs: still queued for the device.
    assert await db.fetchval("SELECT COUNT(*) FROM to_device_messages") == 5
    # A transaction ID forgotten is free again.
    assert await tx.set_client_txn("@a:x", "D1", "old0", "$again") == "$again"
    assert await TransactionIdRetention(db).run(NOW) == dict.fromkeys(deleted, 0)
