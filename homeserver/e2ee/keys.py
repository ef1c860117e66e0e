"""Device keys, one-time/fallback keys and cross-signing: /keys/* logic.

Signature visibility in queries: a signature is shown when it was made by the key's
owner (self-signing of devices, device signatures of the master key) or by the user
asking (their user-signing key's signature of someone's master key); user-signing keys
are only ever returned to their owner.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import canonicaljson

from homeserver.errors import MatrixError, bad_json, invalid_param, missing_param
from homeserver.storage.accounts import AccountStore
from homeserver.storage.e2ee_keys import E2eeKeyStore, StoredSignature

from . import validation as v
from .device_lists import DeviceListService
from .ports import RemoteKeys
from .remote_device_cache import RemoteDeviceCache, keys_query_sections

logger = logging.getLogger(__name__)

CROSS_SIGNING_TYPES = (
    ("master_key", "master"),
    ("self_signing_key", "self_signing"),
    ("user_signing_key", "user_signing"),
)
DEFAULT_OTK_ALGORITHM = "signed_curve25519"


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


def _same(a: Any, b: Any) -> bool:
    return canonicaljson.encode_canonical_json(a) == canonicaljson.encode_canonical_json(b)


def _signature_failure(message: str, errcode: str = "M_INVALID_SIGNATURE") -> dict[str, str]:
    return {"errcode": errcode, "error": message}


# A re-authentication check for replacing cross-signing keys: raises a 401 UIA error
# until the request's `auth` dict proves the user is present.
Reauth = Callable[[str, Any], Awaitable[None]]


class KeysService:
    def __init__(
        self,
        keys: E2eeKeyStore,
        accounts: AccountStore,
        device_lists: DeviceListService,
        server_name: str,
        remote: RemoteKeys | None = None,
        remote_cache: RemoteDeviceCache | None = None,
    ) -> None:
        self._keys = keys
        self._accounts = accounts
        self._device_lists = device_lists
        self._server_name = server_name
        self._remote = remote
        # Device lists of remote users sharing a room with ours (None: always ask).
        self._remote_cache = remote_cache
        # Told of each one-time or fallback key claimed from a local device
        # (appservices that asked for MSC3202 hear the new counts).
        self.claim_listeners: list[Callable[[str, str], None]] = []

    def _is_local(self, user_id: str) -> bool:
        return _server_of(user_id) == self._server_name

    # -- upload --------------------------------------------------------------------------

    async def upload(
        self, user_id: str, device_id: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """POST /keys/upload: store device keys, one-time and fallback keys."""
        if device_id is None:
            raise invalid_param("Uploading keys needs an access token bound to a device")
        device_keys = body.get("device_keys")
        one_time = body.get("one_time_keys")
        fallback = body.get("fallback_keys", body.get("org.matrix.msc2732.fallback_keys"))
        checked_device_keys = (
            v.validate_device_keys(device_keys, user_id, device_id)
            if device_keys is not None
            else None
        )
        otk_rows = v.validate_key_map(one_time, "one_time_keys") if one_time is not None else []
        fallback_rows = (
            v.validate_key_map(fallback, "fallback_keys") if fallback is not None else []
        )

        if otk_rows:
            existing = await self._keys.get_one_time_keys(
                user_id, device_id, [(alg, kid) for alg, kid, _ in otk_rows]
            )
            for alg, kid, key in otk_rows:
                old = existing.get((alg, kid))
                if old is not None and not _same(json.loads(old), key):
                    raise invalid_param(
                        f"One-time key {alg}:{kid} already exists with another value"
                    )
            await self._keys.add_one_time_keys(user_id, device_id, otk_rows)
        seen_algorithms: set[str] = set()
        for alg, kid, key in fallback_rows:
            if alg in seen_algorithms:
                raise invalid_param(f"More than one fallback key for {alg}")
            seen_algorithms.add(alg)
            await self._keys.set_fallback_key(user_id, device_id, alg, kid, key)
        if checked_device_keys is not None:
            old_keys = await self._keys.get_device_keys_json(user_id, device_id)
            if old_keys is None or not _same(old_keys, checked_device_keys):
                await self._keys.set_device_keys(user_id, device_id, checked_device_keys)
                await self._device_lists.mark_changed(user_id, device_id)
        return {"one_time_key_counts": await self.one_time_key_counts(user_id, device_id)}

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        counts = {DEFAULT_OTK_ALGORITHM: 0}
        counts.update(await self._keys.count_one_time_keys(user_id, device_id))
        return counts

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        return await self._keys.unused_fallback_key_types(user_id, device_id)

    # -- query ---------------------------------------------------------------------------

    async def query(self, requester: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /keys/query."""
        wanted = v.require_dict(body.get("device_keys"), "device_keys")
        timeout = v.optional_timeout(body)
        requests: dict[str, list[str]] = {}
        for user_id, devices in wanted.items():
            v.require_str(user_id, "device_keys user ID")
            requests[user_id] = v.require_str_list(devices, f"device_keys.{user_id}")
        result: dict[str, Any] = {
            "device_keys": {},
            "failures": {},
            "master_keys": {},
            "self_signing_keys": {},
            "user_signing_keys": {},
        }
        remote: dict[str, dict[str, list[str]]] = {}
        for user_id, devices in requests.items():
            if not self._is_local(user_id):
                remote.setdefault(_server_of(user_id), {})[user_id] = devices
                continue
            result["device_keys"][user_id] = await self._local_device_keys(
                requester, user_id, devices
            )
            cross = await self._visible_cross_signing_keys(requester, user_id)
            for key_type, key in cross.items():
                result[f"{key_type}_keys"][user_id] = key
        await self._query_remote(remote, timeout, result)
        return result

    async def _local_device_keys(
        self, requester: str, user_id: str, devices: list[str]
    ) -> dict[str, Any]:
        keys = await self._keys.get_device_keys_for_user(user_id, devices or None)
        if keys:
            self._merge_signatures(
                requester, user_id, keys, await self._keys.get_signatures(user_id)
            )
        return keys

    async def _visible_cross_signing_keys(
        self, requester: str, user_id: str
    ) -> dict[str, dict[str, Any]]:
        stored = await self._keys.get_cross_signing_keys(user_id)
        if requester != user_id:
            stored.pop("user_signing", None)
        if not stored:
            return {}
        by_public_key = {
            next(iter(key["keys"].values())): key for key in stored.values() if key.get("keys")
        }
        self._merge_signatures(
            requester, user_id, by_public_key, await self._keys.get_signatures(user_id)
        )
        return stored

    @staticmethod
    def _merge_signatures(
        requester: str,
        owner: str,
        objects: dict[str, dict[str, Any]],
        signatures: list[StoredSignature],
    ) -> None:
        """Add stored signatures to `objects` (target key ID -> key object, in place)."""
        for sig in signatures:
            target = objects.get(sig.target_key_id)
            if target is None or sig.signer_user_id not in (owner, requester):
                continue
            sigs = target.setdefault("signatures", {})
            sigs.setdefault(sig.signer_user_id, {})[sig.signer_key_id] = sig.signature

    async def _query_remote(
        self, remote: dict[str, dict[str, list[str]]], timeout: int, result: dict[str, Any]
    ) -> None:
        port = self._remote
        for server, users in sorted(remote.items()):
            if port is None:
                result["failures"][server] = {"status": 503, "message": "Federation unavailable"}
                continue
            users = dict(users)
            if self._remote_cache is not None:
                for user_id in list(users):
                    if not await self._device_lists.shares_room_with_local_user(
                        user_id, self._server_name
                    ):
                        continue
                    try:
                        cached = await self._remote_cache.lookup(user_id, port.user_devices)
                    except Exception as exc:  # fall back to user/keys/query below
                        logger.info("user/devices of %s failed: %s", user_id, exc)
                        continue
                    for section, value in keys_query_sections(cached, users[user_id]).items():
                        result[section].update(value)
                    del users[user_id]
                if not users:
                    continue
            try:
                answer = await port.query(server, users, timeout)
            except Exception as exc:  # any remote failure is reported, never raised
                logger.info("keys/query to %s failed: %s", server, exc)
                result["failures"][server] = {"status": 503, "message": "Not reachable"}
                continue
            for section in ("device_keys", "master_keys", "self_signing_keys"):
                values = answer.get(section)
                if isinstance(values, dict):
                    for user_id, value in values.items():
                        if user_id in users:
                            result[section][user_id] = value

    # -- claim ---------------------------------------------------------------------------

    async def claim(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /keys/claim: one key per (user, device, algorithm), OTK before fallback."""
        wanted = v.require_dict(body.get("one_time_keys"), "one_time_keys")
        timeout = v.optional_timeout(body)
        result: dict[str, Any] = {"one_time_keys": {}, "failures": {}}
        remote: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, devices in wanted.items():
            devices = v.require_dict(devices, f"one_time_keys.{user_id}")
            for device_id, algorithm in devices.items():
                v.require_str(algorithm, f"one_time_keys.{user_id}.{device_id}")
            if not self._is_local(user_id):
                remote.setdefault(_server_of(user_id), {})[user_id] = devices
                continue
            for device_id, algorithm in devices.items():
                claimed = await self._keys.claim_key(user_id, device_id, algorithm)
                if claimed is not None:
                    key_id, key = claimed
                    result["one_time_keys"].setdefault(user_id, {})[device_id] = {key_id: key}
                    for listener in self.claim_listeners:
                        listener(user_id, device_id)
        port = self._remote
        for server, users in sorted(remote.items()):
            if port is None:
                result["failures"][server] = {"status": 503, "message": "Federation unavailable"}
                continue
            try:
                answer = await port.claim(server, users, timeout)
            except Exception as exc:
                logger.info("keys/claim to %s failed: %s", server, exc)
                result["failures"][server] = {"status": 503, "message": "Not reachable"}
                continue
            keys = answer.get("one_time_keys")
            if isinstance(keys, dict):
                for user_id, value in keys.items():
                    if user_id in users and isinstance(value, dict):
                        result["one_time_keys"][user_id] = value
        return result

    # -- cross-signing -------------------------------------------------------------------

    async def upload_cross_signing(
        self, user_id: str, body: dict[str, Any], reauth: Reauth
    ) -> dict[str, Any]:
        """POST /keys/device_signing/upload.

        The first master key may be set without re-authentication (the spec allows it);
        replacing existing keys with different ones needs `reauth` to pass.
        """
        given: dict[str, tuple[str, dict[str, Any]]] = {}
        for field, key_type in CROSS_SIGNING_TYPES:
            if body.get(field) is None:
                continue
            public = v.cross_signing_public_key(body[field], field, user_id, key_type)
            given[key_type] = (public, body[field])
        if not given:
            return {}
        stored = await self._keys.get_cross_signing_keys(user_id)
        if all(kt in stored and _same(stored[kt], key) for kt, (_, key) in given.items()):
            return {}  # an idempotent re-upload
        if "master" in given:
            master_public = given["master"][0]
        elif "master" in stored:
            master_public = next(iter(stored["master"]["keys"].values()))
        else:
            raise missing_param("master_key is required: no master key is set yet")
        for key_type in ("self_signing", "user_signing"):
            if key_type in given and not v.verify_ed25519(
                given[key_type][1], user_id, f"ed25519:{master_public}", master_public
            ):
                raise v.invalid_signature(f"{key_type}_key is not signed by the master key")
        if "master" in stored:
            await reauth(user_id, body.get("auth"))
        await self._keys.set_cross_signing_keys(user_id, given)
        changed = {kt for kt, (_, key) in given.items() if not _same(stored.get(kt), key)}
        if changed - {"user_signing"}:
            await self._device_lists.mark_changed(user_id, signing_keys=True)
        # A new user-signing key alone concerns nobody else (only its owner ever sees
        # it, and it signs nothing others verify): others' device lists stay as they
        # are, as in Synapse. The owner's clients made the change themselves.
        return {}

    async def upload_signatures(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /keys/signatures/upload: verify and store signatures; report failures."""
        failures: dict[str, dict[str, Any]] = {}
        to_store: list[StoredSignature] = []
        own = await self._keys.get_cross_signing_keys(user_id)
        for target_user, objects in body.items():
            objects = v.require_dict(objects, f"signed keys of {target_user}")
            for key_id, obj in objects.items():
                try:
                    to_store += await self._check_signature_upload(
                        user_id, own, target_user, key_id, obj
                    )
                except MatrixError as exc:
                    failures.setdefault(target_user, {})[key_id] = _signature_failure(
                        exc.message, exc.errcode
                    )
        if to_store:
            await self._keys.add_signatures(to_store)
            await self._announce_signatures(to_store)
        return {"failures": failures}

    async def _check_signature_upload(
        self,
        user_id: str,
        own: dict[str, dict[str, Any]],
        target_user: str,
        key_id: str,
        obj: Any,
    ) -> list[StoredSignature]:
        if not isinstance(obj, dict):
            raise bad_json("Signed key must be an object")
        v.check_signatures_shape(obj, "signed key")
        my_sigs = obj.get("signatures", {}).get(user_id)
        if not isinstance(my_sigs, dict) or not my_sigs:
            raise MatrixError(400, "M_INVALID_SIGNATURE", "No signature by the uploader")
        if not self._is_local(target_user):
            raise MatrixError(400, "M_INVALID_PARAM", "Signing remote keys is not supported yet")
        target_master = (
            own.get("master")
            if target_user == user_id
            else (await self._keys.get_cross_signing_keys(target_user)).get("master")
        )
        target_master_public = next(iter(target_master["keys"].values())) if target_master else None
        if target_user == user_id and key_id != target_master_public:
            # A device of ours, signed by our self-signing key.
            stored = await self._keys.get_device_keys_json(user_id, key_id)
            if stored is None:
                raise MatrixError(404, "M_NOT_FOUND", "Unknown device")
            signer = own.get("self_signing")
            if signer is None:
                raise MatrixError(400, "M_MISSING_PARAM", "No self-signing key is set")
            return self._verified(user_id, signer, stored, obj, target_user, key_id)
        if target_master is None or key_id != target_master_public:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown master key")
        if target_user == user_id:
            # Our master key, signed by one of our devices.
            if not _same(v.strip_signatures(obj), v.strip_signatures(target_master)):
                raise MatrixError(400, "M_INVALID_SIGNATURE", "Key does not match the stored key")
            devices = await self._keys.get_device_keys_for_user(user_id)
            result = []
            for sig_key_id in my_sigs:
                device = devices.get(sig_key_id.partition(":")[2])
                public = device.get("keys", {}).get(sig_key_id) if device else None
                if isinstance(public, str) and v.verify_ed25519(obj, user_id, sig_key_id, public):
                    result.append(
                        StoredSignature(
                            target_user, key_id, user_id, sig_key_id, my_sigs[sig_key_id]
                        )
                    )
            if not result:
                raise MatrixError(400, "M_INVALID_SIGNATURE", "No valid device signature")
            return result
        signer = own.get("user_signing")
        if signer is None:
            raise MatrixError(400, "M_MISSING_PARAM", "No user-signing key is set")
        return self._verified(user_id, signer, target_master, obj, target_user, key_id)

    @staticmethod
    def _verified(
        user_id: str,
        signer_key: dict[str, Any],
        stored: dict[str, Any],
        obj: dict[str, Any],
        target_user: str,
        target_key_id: str,
    ) -> list[StoredSignature]:
        """One signature of `obj` by `signer_key` (a cross-signing key of `user_id`)."""
        if not _same(v.strip_signatures(obj), v.strip_signatures(stored)):
            raise MatrixError(400, "M_INVALID_SIGNATURE", "Key does not match the stored key")
        public = next(iter(signer_key["keys"].values()))
        signer_key_id = f"ed25519:{public}"
        signature = obj["signatures"][user_id].get(signer_key_id)
        if not isinstance(signature, str) or not v.verify_ed25519(
            obj, user_id, signer_key_id, public
        ):
            raise MatrixError(400, "M_INVALID_SIGNATURE", "Invalid signature")
        return [StoredSignature(target_user, target_key_id, user_id, signer_key_id, signature)]

    # -- changes -------------------------------------------------------------------------

    async def device_deleted(self, user_id: str, device_id: str) -> None:
        """Forget a deleted device's keys and tell everyone who shares a room."""
        await self._keys.delete_device(user_id, device_id)
        await self._device_lists.mark_changed(user_id, device_id, deleted=True)

    async def device_created(self, user_id: str, device_id: str) -> None:
        """A new device (a login): everyone sharing a room re-fetches the list."""
        await self._device_lists.mark_changed(user_id, device_id)

    async def _announce_signatures(self, stored: list[StoredSignature]) -> None:
        """One change per signed device; one per user whose master key was signed."""
        for target in sorted({s.target_user_id for s in stored}):
            key_ids = sorted({s.target_key_id for s in stored if s.target_user_id == target})
            devices = await self._keys.get_device_keys_for_user(target, key_ids)
            for device_id in sorted(devices):
                await self._device_lists.mark_changed(target, device_id)
            if any(k not in devices for k in key_ids):
                await self._device_lists.mark_changed(target, signing_keys=True)
