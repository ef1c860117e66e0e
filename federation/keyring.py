"""Remote server signing keys: fetch, validate, cache, and verify signed JSON with them.

Lookup order for (server, key ID): memory, then the store, then the network: the
server's own `/_matrix/key/v2/server` (requested over the signing federation client, as
Synapse does), then each configured notary's `/_matrix/key/v2/query`, whose answers must
carry both the origin's self-signature and the notary's signature by a configured key.

Validity (`at_ts`): None means any known key will do (room versions 1-4 ignore
`valid_until_ts`, and callers with no timestamp); otherwise a current key must have
`valid_until_ts >= at_ts` and an old key must have `at_ts < expired_ts`. A key we hold
but that is not valid at `at_ts` triggers a refetch, since the server may since have
extended its validity.

Network fetches per server are de-duplicated (concurrent callers share one) and rate
limited: after an attempt, the next is allowed only `refetch_interval_ms` later, so a
peer sending events signed with unknown keys cannot make us hammer anyone.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import nacl.exceptions
import nacl.signing
from canonicaljson import encode_canonical_json

from federation.auth import decode_unpadded_base64
from homeserver.storage.cache import LruCache

log = logging.getLogger(__name__)

REFETCH_INTERVAL_MS = 60_000
# A key ID we have never seen for a server (it rotated its key) may be fetched again
# this soon after the last fetch, instead of waiting out REFETCH_INTERVAL_MS.
NEW_KEY_REFETCH_MS = 5_000
FETCH_TIMEOUT_S = 30.0
# Key fetches in flight at once, across every server and requester: a send_join
# naming 300 made-up signing servers, or many notary queries, wait their turn
# instead of opening hundreds of outbound connections.
MAX_CONCURRENT_FETCHES = 16
# Servers we keep per-name state for (cached keys, documents, last fetch time): least
# recently used ones are forgotten past this (the database still has their keys).
MAX_TRACKED_SERVERS = 10_000

# (verify_key_b64, valid_until_ts, expired_ts | None)
StoredKey = tuple[str, int, int | None]


class KeyringError(Exception):
    """Base class: a signature could not be checked or did not verify."""


class KeyNotFound(KeyringError):
    """No key (valid at the requested time) could be found for a server / key ID."""


class InvalidSignature(KeyringError):
    """A signature is missing, malformed or does not verify."""


class KeyStoreProtocol(Protocol):
    """Persistence for fetched keys (homeserver/storage/server_keys.py implements it)."""

    async def store_server_keys(
        self,
        server_name: str,
        keys: list[tuple[str, str, int, int | None]],
        fetched_ts: int,
    ) -> None: ...

    async def get_server_keys(
        self, server_name: str, key_ids: Sequence[str]
    ) -> dict[str, StoredKey]: ...


class KeyFetchHttp(Protocol):
    """What the keyring needs from the federation client (signed JSON requests)."""

    async def get_json(
        self, destination: str, path: str, *, query: Any = None, timeout: float | None = None
    ) -> Any: ...

    async def post_json(
        self,
        destination: str,
        path: str,
        json_body: Any,
        *,
        query: Any = None,
        timeout: float | None = None,
    ) -> Any: ...


class MemoryKeyStore:
    """In-memory KeyStoreProtocol for tests and single-process tools."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, StoredKey]] = {}
        self.fetched_ts: dict[str, int] = {}

    async def store_server_keys(
        self,
        server_name: str,
        keys: list[tuple[str, str, int, int | None]],
        fetched_ts: int,
    ) -> None:
        bucket = self.keys.setdefault(server_name, {})
        for key_id, key_b64, valid_until, expired in keys:
            bucket[key_id] = (key_b64, valid_until, expired)
        self.fetched_ts[server_name] = fetched_ts

    async def get_server_keys(
        self, server_name: str, key_ids: Sequence[str]
    ) -> dict[str, StoredKey]:
        bucket = self.keys.get(server_name, {})
        return {k: bucket[k] for k in key_ids if k in bucket}


@dataclass(frozen=True)
class TrustedKeyServer:
    """A notary from config: its server name and the keys its answers must be signed with."""

    server_name: str
    verify_keys: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, item: TrustedKeyServer | Mapping[str, Any]) -> TrustedKeyServer:
        if isinstance(item, TrustedKeyServer):
            return item
        return cls(str(item["server_name"]), dict(item.get("verify_keys") or {}))


@dataclass(frozen=True, slots=True)
class CachedKey:
    verify_key: nacl.signing.VerifyKey
    valid_until_ts: int
    expired_ts: int | None

    def valid_at(self, at_ts: int | None) -> bool:
        if at_ts is None:
            return True
        if self.expired_ts is not None:
            return at_ts < self.expired_ts
        return at_ts <= self.valid_until_ts


def decode_verify_key(key_id: str, key_b64: str) -> nacl.signing.VerifyKey:
    """A VerifyKey from an `ed25519:...` ID and unpadded base64 (ValueError otherwise)."""
    if not key_id.startswith("ed25519:"):
        raise ValueError(f"unsupported key algorithm in {key_id!r}")
    raw = decode_unpadded_base64(key_b64)
    if len(raw) != 32:
        raise ValueError("ed25519 verify key must be 32 bytes")
    vk = nacl.signing.VerifyKey(raw)
    vk.alg, vk.version = key_id.split(":", 1)  # type: ignore[attr-defined]
    return vk


def check_signature(
    obj: Mapping[str, Any], signer: str, key_id: str, key: nacl.signing.VerifyKey
) -> bool:
    """True if `obj` carries a valid signature by `signer`/`key_id` made with `key`."""
    try:
        sig_b64 = obj["signatures"][signer][key_id]
        sig = decode_unpadded_base64(sig_b64)
        unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
        key.verify(encode_canonical_json(unsigned), sig)
    except (KeyError, TypeError, ValueError, nacl.exceptions.BadSignatureError):
        return False
    return True


def parse_key_document(doc: Any, server_name: str) -> dict[str, CachedKey]:
    """Validate a server key document for `server_name` and return its keys.

    Checks: `server_name` matches, `valid_until_ts` is an integer, every current key in
    `verify_keys` decodes and has signed the document. Old keys must carry an integer
    `expired_ts`. Keys of unknown algorithms are skipped. Raises ValueError.
    """
    if not isinstance(doc, dict):
        raise ValueError("key document is not an object")
    if doc.get("server_name") != server_name:
        raise ValueError(f"key document is for {doc.get('server_name')!r}, not {server_name!r}")
    valid_until = doc.get("valid_until_ts")
    if not isinstance(valid_until, int) or isinstance(valid_until, bool):
        raise ValueError("key document has no integer valid_until_ts")
    verify_keys = doc.get("verify_keys")
    if not isinstance(verify_keys, dict) or not verify_keys:
        raise ValueError("key document has no verify_keys")
    out: dict[str, CachedKey] = {}
    for key_id, entry in verify_keys.items():
        if not key_id.startswith("ed25519:"):
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ValueError(f"malformed verify key {key_id}")
        vk = decode_verify_key(key_id, entry["key"])
        if not check_signature(doc, server_name, key_id, vk):
            raise ValueError(f"key document is not self-signed by {key_id}")
        out[key_id] = CachedKey(vk, valid_until, None)
    if not out:
        raise ValueError("key document has no ed25519 verify key")
    old = doc.get("old_verify_keys") or {}
    if not isinstance(old, dict):
        raise ValueError("old_verify_keys is not an object")
    for key_id, entry in old.items():
        if not key_id.startswith("ed25519:") or key_id in out:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ValueError(f"malformed old verify key {key_id}")
        expired = entry.get("expired_ts")
        if not isinstance(expired, int) or isinstance(expired, bool):
            raise ValueError(f"old verify key {key_id} has no integer expired_ts")
        out[key_id] = CachedKey(decode_verify_key(key_id, entry["key"]), valid_until, expired)
    return out


def _ms_now() -> int:
    return int(time.time() * 1000)


class Keyring:
    """Finds remote servers' verify keys and checks signatures with them."""

    def __init__(
        self,
        store: KeyStoreProtocol,
        http: KeyFetchHttp,
        our_server_name: str,
        trusted_key_servers: Sequence[TrustedKeyServer | Mapping[str, Any]] = (),
        clock: Callable[[], int] = _ms_now,
        *,
        refetch_interval_ms: int = REFETCH_INTERVAL_MS,
        local_keys: Mapping[str, nacl.signing.VerifyKey] | None = None,
    ) -> None:
        """`clock` returns milliseconds. `local_keys` are our own verify keys, answered
        without any I/O for `our_server_name`."""
        self.store = store
        self.http = http
        self.our_server_name = our_server_name
        self.notaries = [TrustedKeyServer.from_config(t) for t in trusted_key_servers]
        self.clock = clock
        self.refetch_interval_ms = refetch_interval_ms
        self._local: dict[str, CachedKey] = {
            k: CachedKey(v, 2**62, None) for k, v in (local_keys or {}).items()
        }
        self._cache: LruCache[str, dict[str, CachedKey]] = LruCache(MAX_TRACKED_SERVERS)
        self._last_fetch: LruCache[str, int] = LruCache(MAX_TRACKED_SERVERS)
        # (server, key ID) looked for and not found: ms when. Such a key ID no longer
        # counts as new, so made-up key IDs cannot force a refetch every few seconds.
        self._missing: LruCache[tuple[str, str], int] = LruCache(MAX_TRACKED_SERVERS)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._fetch_slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        # Newest verified key document per server as its origin signed it: what we
        # answer as a notary (`/_matrix/key/v2/query`). Memory only: after a restart
        # the first query for a server refetches it.
        self._documents: LruCache[str, dict[str, Any]] = LruCache(MAX_TRACKED_SERVERS)

    # ----------------------------------------------------------------- lookups

    async def get_verify_key(
        self, server_name: str, key_id: str, at_ts: int | None = None
    ) -> nacl.signing.VerifyKey:
        """The verify key `key_id` of `server_name`, valid at `at_ts`; KeyNotFound if none."""
        if server_name == self.our_server_name and key_id in self._local:
            return self._local[key_id].verify_key
        key = (self._cache.get(server_name) or {}).get(key_id)
        if key is not None and key.valid_at(at_ts):
            return key.verify_key
        stored = await self._from_store(server_name, key_id)
        if stored is not None and stored.valid_at(at_ts):
            return stored.verify_key
        if server_name == self.our_server_name:
            raise KeyNotFound(f"unknown local key {key_id}")
        known = self._cache.get(server_name) or {}
        new_key = key_id not in known and (server_name, key_id) not in self._missing
        try:
            await self._fetch(server_name, new_key=new_key)
        finally:
            if key_id not in (self._cache.get(server_name) or {}):
                self._missing.set((server_name, key_id), self.clock())
        key = (self._cache.get(server_name) or {}).get(key_id)
        if key is None:
            raise KeyNotFound(f"no key {key_id} for {server_name}")
        if not key.valid_at(at_ts):
            raise KeyNotFound(
                f"key {key_id} of {server_name} is not valid at {at_ts} "
                f"(valid_until_ts={key.valid_until_ts}, expired_ts={key.expired_ts})"
            )
        return key.verify_key

    async def _from_store(self, server_name: str, key_id: str) -> CachedKey | None:
        rows = await self.store.get_server_keys(server_name, [key_id])
        row = rows.get(key_id)
        if row is None:
            return None
        key_b64, valid_until, expired = row
        try:
            cached = CachedKey(decode_verify_key(key_id, key_b64), valid_until, expired)
        except ValueError:
            log.warning("unusable stored key %s of %s", key_id, server_name)
            return None
        self._remember(server_name, {key_id: cached})
        return cached

    def _remember(self, server_name: str, keys: Mapping[str, CachedKey]) -> None:
        bucket = self._cache.get(server_name)
        if bucket is None:
            bucket = {}
            self._cache.set(server_name, bucket)
        for key_id, new in keys.items():
            old = bucket.get(key_id)
            # Never let an older answer (e.g. a stale notary copy) shorten what we know.
            if (
                old is not None
                and old.expired_ts is None
                and new.expired_ts is None
                and new.valid_until_ts < old.valid_until_ts
            ):
                continue
            bucket[key_id] = new

    # ----------------------------------------------------------------- fetching

    async def _fetch(self, server_name: str, *, new_key: bool = False) -> None:
        """Fetch keys for `server_name` once; concurrent callers share the attempt.

        At most one fetch per server per refetch interval, or per NEW_KEY_REFETCH_MS
        when asked for a key ID we have never seen (the server has rotated its key:
        its signatures must not fail for a whole minute).
        """
        task = self._inflight.get(server_name)
        if task is None:
            last = self._last_fetch.get(server_name)
            now = self.clock()
            interval = (
                min(NEW_KEY_REFETCH_MS, self.refetch_interval_ms)
                if new_key
                else (self.refetch_interval_ms)
            )
            if last is not None and now - last < interval:
                raise KeyNotFound(
                    f"keys of {server_name} were fetched {now - last} ms ago; not refetching"
                )
            self._last_fetch.set(server_name, now)
            task = asyncio.ensure_future(self._fetch_in_slot(server_name))
            self._inflight[server_name] = task
            task.add_done_callback(lambda _t: self._inflight.pop(server_name, None))
        await asyncio.shield(task)

    async def _fetch_in_slot(self, server_name: str) -> None:
        async with self._fetch_slots:
            await self._fetch_all_sources(server_name)

    async def _fetch_all_sources(self, server_name: str) -> None:
        keys = await self._fetch_direct(server_name)
        if keys is None:
            for notary in self.notaries:
                keys = await self._fetch_from_notary(notary, server_name)
                if keys:
                    break
        if not keys:
            return
        self._remember(server_name, keys)
        await self.store.store_server_keys(
            server_name,
            [
                (kid, _encode_key(k.verify_key), k.valid_until_ts, k.expired_ts)
                for kid, k in keys.items()
            ],
            self.clock(),
        )

    async def _fetch_direct(self, server_name: str) -> dict[str, CachedKey] | None:
        try:
            doc = await self.http.get_json(
                server_name, "/_matrix/key/v2/server", timeout=FETCH_TIMEOUT_S
            )
            keys = parse_key_document(doc, server_name)
        except Exception as e:  # any failure: fall back to notaries
            log.info("direct key fetch from %s failed: %s", server_name, e)
            return None
        self._remember_document(server_name, doc, from_origin=True)
        return keys

    def _remember_document(
        self, server_name: str, doc: dict[str, Any], *, from_origin: bool = False
    ) -> None:
        """Keep `doc` (already verified). The origin's own answer always wins: it is
        the server's current key set, even if a cached copy (say from a notary) claims
        a longer validity. A notary's copy replaces only a shorter-lived one."""
        old = self._documents.get(server_name)
        if from_origin or old is None or doc["valid_until_ts"] >= old["valid_until_ts"]:
            self._documents.set(server_name, doc)

    async def _fetch_from_notary(
        self, notary: TrustedKeyServer, server_name: str
    ) -> dict[str, CachedKey] | None:
        if not notary.verify_keys:
            log.warning("notary %s has no configured verify keys; ignored", notary.server_name)
            return None
        try:
            resp = await self.http.post_json(
                notary.server_name,
                "/_matrix/key/v2/query",
                {"server_keys": {server_name: {}}},
                timeout=FETCH_TIMEOUT_S,
            )
        except Exception as e:
            log.info("key query to notary %s for %s failed: %s", notary.server_name, server_name, e)
            return None
        docs = resp.get("server_keys") if isinstance(resp, dict) else None
        if not isinstance(docs, list):
            return None
        found: dict[str, CachedKey] = {}
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("server_name") != server_name:
                continue
            if not self._notary_signed(doc, notary):
                log.warning(
                    "notary %s answer for %s not signed by it", notary.server_name, server_name
                )
                continue
            try:
                keys = parse_key_document(doc, server_name)
            except ValueError as e:
                log.warning(
                    "bad key document for %s via %s: %s", server_name, notary.server_name, e
                )
                continue
            self._remember_document(server_name, doc)
            for kid, k in keys.items():
                if kid not in found or k.valid_until_ts > found[kid].valid_until_ts:
                    found[kid] = k
        return found or None

    @staticmethod
    def _notary_signed(doc: Mapping[str, Any], notary: TrustedKeyServer) -> bool:
        for key_id, key_b64 in notary.verify_keys.items():
            try:
                vk = decode_verify_key(key_id, key_b64)
            except ValueError:
                continue
            if check_signature(doc, notary.server_name, key_id, vk):
                return True
        return False

    # ----------------------------------------------------------------- notary

    async def documents_for_notary(
        self,
        server_name: str,
        key_ids: Sequence[str],
        minimum_valid_until_ts: int,
        *,
        may_fetch: bool = True,
    ) -> list[dict[str, Any]]:
        """Key documents of `server_name` to answer a `/_matrix/key/v2/query` with.

        The cached document if it is valid until `minimum_valid_until_ts` and holds every
        key in `key_ids`; otherwise a fetch is tried first (rate limited as any other)
        and whatever we then hold is returned, stale or not: the spec lets a notary
        answer with cached keys when the origin is unreachable, and the requester checks
        validity itself. An empty list when we know nothing. Copies: the caller signs.
        """
        doc = self._documents.get(server_name)
        if may_fetch and (
            doc is None or not _document_satisfies(doc, key_ids, minimum_valid_until_ts)
        ):
            try:
                await self._fetch(server_name)
            except KeyNotFound as e:
                log.info("notary: no fresh keys for %s: %s", server_name, e)
            doc = self._documents.get(server_name)
        if doc is None:
            return []
        copy = dict(doc)
        copy["signatures"] = {k: dict(v) for k, v in doc.get("signatures", {}).items()}
        return [copy]

    # ----------------------------------------------------------------- verification

    async def verify_json_for_server(
        self, server_name: str, obj: Mapping[str, Any], at_ts: int | None = None
    ) -> None:
        """Raise unless `obj` is validly signed by `server_name` with a key valid at `at_ts`.

        Every ed25519 signature of the server whose key we can find must verify, and at
        least one must; signatures by keys we cannot find are ignored unless none is left.
        """
        sigs = obj.get("signatures")
        if not isinstance(sigs, dict) or not isinstance(sigs.get(server_name), dict):
            raise InvalidSignature(f"no signature from {server_name}")
        key_ids = [k for k in sigs[server_name] if isinstance(k, str) and k.startswith("ed25519:")]
        if not key_ids:
            raise InvalidSignature(f"no ed25519 signature from {server_name}")
        verified = 0
        missing: list[str] = []
        for key_id in key_ids:
            try:
                vk = await self.get_verify_key(server_name, key_id, at_ts)
            except KeyNotFound as e:
                missing.append(str(e))
                continue
            if not check_signature(obj, server_name, key_id, vk):
                raise InvalidSignature(f"signature {key_id} of {server_name} does not verify")
            verified += 1
        if not verified:
            raise KeyNotFound("; ".join(missing))


def _document_satisfies(
    doc: Mapping[str, Any], key_ids: Sequence[str], minimum_valid_until_ts: int
) -> bool:
    if doc["valid_until_ts"] < minimum_valid_until_ts:
        return False
    known = set(doc.get("verify_keys") or {}) | set(doc.get("old_verify_keys") or {})
    return all(k in known for k in key_ids)


def _encode_key(vk: nacl.signing.VerifyKey) -> str:
    return base64.b64encode(bytes(vk)).decode("ascii").rstrip("=")
