"""Every PDU Synapse 1.163.2 sent in the recorded federation traffic must pass our event
format code: format validation, content hash, event IDs equal to the ones Synapse used,
signatures against the captured server keys, and signatures surviving our redaction.

Captures: /work/shared/interop/captures (see its README). Grouped by room version:
`by-room-version/vN-raw-hs{1,2}.jsonl` (keys in by-room-version/server_keys.json), and
the top-level `*.json` / `raw-hs*.jsonl` of a v12 room (keys in server_keys.json).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from homeserver.events import Event, RoomVersion, get_room_version
from homeserver.events.canonical import encode_canonical_json
from homeserver.events.hashing import check_content_hash, compute_reference_hash, unpadded_b64
from homeserver.events.redaction import redact
from homeserver.events.signing import (
    SignatureError,
    VerifyKey,
    decode_verify_key_base64,
    verify_event_signature,
    verify_event_signatures,
    verify_json_signature,
)
from homeserver.events.validation import validate_pdu_format

CAPTURES = Path("/work/shared/interop/captures")

pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="no interop captures here")


@dataclass
class Group:
    """The captured traffic of one room version, with the keys that signed it."""

    room_version: RoomVersion
    records: list[dict[str, Any]]
    keys: dict[str, dict[str, VerifyKey]]
    pdus: list[dict[str, Any]] = field(default_factory=list)  # deduplicated
    events: list[Event] = field(default_factory=list)


def _read_records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(path.read_text())]


def _pdus_in(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The complete PDUs in one exchange (not make_join templates or stripped state)."""
    req = record.get("request_body") or {}
    resp = record.get("response_body") or {}
    path = record["path"]
    found: list[Any] = []
    if "/send_join/" in path:
        found += [req, resp.get("event"), *resp.get("state", []), *resp.get("auth_chain", [])]
    elif "/invite/" in path:
        found += [req.get("event"), resp.get("event")]
    elif "/make_join/" not in path:
        for body in (req, resp):
            if isinstance(body, dict):
                for key in ("pdus", "auth_chain"):
                    if isinstance(body.get(key), list):
                        found += body[key]
    return [p for p in found if isinstance(p, dict) and p]


def _load_keys(path: Path) -> dict[str, dict[str, VerifyKey]]:
    keys: dict[str, dict[str, VerifyKey]] = {}
    for server, doc in json.loads(path.read_text()).items():
        keys[server] = {
            key_id: decode_verify_key_base64(key_id, k["key"])
            for key_id, k in doc["verify_keys"].items()
        }
    return keys


@cache
def _groups() -> dict[str, Group]:
    files: dict[str, list[Path]] = {}
    for path in sorted(CAPTURES.glob("by-room-version/v*-raw-hs*.jsonl")):
        version = re.match(r"v(\d+)-raw", path.name).group(1)  # type: ignore[union-attr]
        files.setdefault(version, []).append(path)
    top = [
        p
        for p in sorted(CAPTURES.glob("*.json")) + sorted(CAPTURES.glob("raw-hs*.jsonl"))
        if p.name not in ("server_keys.json", "sequence.json")
    ]
    groups: dict[str, Group] = {}
    for name, paths in [*files.items(), ("top-level", top)]:
        records = [r for p in paths for r in _read_records(p)]
        keys_path = (
            CAPTURES / ("by-room-version" if name != "top-level" else "") / "server_keys.json"
        )
        group = Group(_room_version_of(name, records), records, _load_keys(keys_path))
        seen: set[bytes] = set()
        for record in records:
            for pdu in _pdus_in(record):
                ident = encode_canonical_json({k: v for k, v in pdu.items() if k != "unsigned"})
                if ident not in seen:
                    seen.add(ident)
                    group.pdus.append(pdu)
                    group.events.append(Event(pdu, group.room_version))
        groups[name] = group
    return groups


def _room_version_of(name: str, records: list[dict[str, Any]]) -> RoomVersion:
    """The version from the create events (and make_join), checked against the file name."""
    seen = {
        pdu["content"].get("room_version", "1")
        for r in records
        for pdu in _pdus_in(r)
        if pdu.get("type") == "m.room.create"
    }
    seen |= {
        r["response_body"]["room_version"]
        for r in records
        if "/make_join/" in r["path"] and r.get("response_body")
    }
    assert len(seen) == 1, f"{name}: room versions {seen}"
    (version,) = seen
    if name != "top-level":
        assert version == name
    return get_room_version(version)


GROUP_NAMES = [str(v) for v in range(1, 13)] + ["top-level"]


@pytest.fixture(params=GROUP_NAMES, scope="module")
def group(request: pytest.FixtureRequest) -> Group:
    return _groups()[request.param]


def test_captures_cover_every_room_version() -> None:
    groups = _groups()
    for name in GROUP_NAMES:
        assert len(groups[name].pdus) >= 20, name
    types = {e.type for e in groups["1"].events}
    assert {"m.room.create", "m.room.member", "m.room.power_levels", "m.room.message"} <= types


def test_server_key_documents_are_self_signed() -> None:
    for keys_path in (CAPTURES / "server_keys.json", CAPTURES / "by-room-version/server_keys.json"):
        docs = json.loads(keys_path.read_text())
        keys = _load_keys(keys_path)
        for server, doc in docs.items():
            assert all(verify_json_signature(doc, server, k) for k in keys[server].values())
            tampered = dict(doc, valid_until_ts=doc["valid_until_ts"] + 1)
            assert not any(
                verify_json_signature(tampered, server, k) for k in keys[server].values()
            )


def test_format_and_content_hash(group: Group) -> None:
    for pdu in group.pdus:
        validate_pdu_format(pdu, group.room_version)
        assert check_content_hash(pdu), pdu


def _ids_synapse_used(record: dict[str, Any]) -> list[str]:
    url = urlsplit(record["path"])
    ids = [unquote(s) for s in url.path.split("/") if unquote(s).startswith("$")]
    ids += [v for vs in parse_qs(url.query).values() for v in vs if v.startswith("$")]
    resp = record.get("response_body") or {}
    if "/state_ids/" in record["path"]:
        ids += resp["pdu_ids"] + resp["auth_chain_ids"]
    return ids


def test_event_ids_match_synapse(group: Group) -> None:
    rv = group.room_version
    ours = {e.event_id for e in group.events}
    by_id = {e.event_id: e for e in group.events}
    referenced: set[str] = set()
    for event in group.events:
        referenced.update(event.prev_event_ids, event.auth_event_ids)
    for record in group.records:
        referenced.update(_ids_synapse_used(record))
    # Every ID Synapse put in a URL, a state_ids answer or an edge is one we compute.
    assert referenced <= ours, sorted(referenced - ours)[:5]

    checked = 0
    for record in group.records:
        path = urlsplit(record["path"]).path
        target = unquote(path.rsplit("/", 1)[-1])
        req, resp = record.get("request_body"), record.get("response_body")
        if "/send_join/" in path:
            assert Event(req, rv).event_id == target
            assert Event(resp["event"], rv).event_id == target
            checked += 1
        elif "/invite/" in path:
            assert Event(req["event"], rv).event_id == target
            assert Event(resp["event"], rv).event_id == target
            checked += 1
        elif "/federation/v1/event/" in path:
            assert [Event(p, rv).event_id for p in resp["pdus"]] == [target]
            checked += 1
    assert checked >= 3

    for event in group.events:
        if rv.event_id_in_event:
            # v1/v2 edges carry the reference hash of the event they cite, when given.
            for edge in event.pdu["prev_events"] + event.pdu["auth_events"]:
                if edge[1]:
                    cited = by_id[edge[0]]
                    assert edge[1]["sha256"] == unpadded_b64(compute_reference_hash(cited.pdu, rv))
        if rv.room_id_is_create_event_id and event.is_create():
            assert event.room_id == "!" + event.event_id[1:]
            assert any(e.pdu.get("room_id") == event.room_id for e in group.events)


def test_signatures_verify(group: Group) -> None:
    multi_signed = 0
    for event in group.events:
        verify_event_signatures(event, group.keys)
        # Every signature by a server whose keys we hold is valid (invites carry two).
        signers = [s for s in event.pdu["signatures"] if s in group.keys]
        assert event.origin in signers
        for server in signers:
            for key_id in event.pdu["signatures"][server]:
                key = group.keys[server][key_id]
                assert verify_event_signature(event.pdu, group.room_version, server, key)
        multi_signed += len(signers) > 1
    assert multi_signed >= 1  # the invite, counter-signed by the invitee's server


def test_redacted_copies_keep_signatures_and_ids(group: Group) -> None:
    rv = group.room_version
    for event in group.events:
        redacted = redact(event.pdu, rv)
        validate_pdu_format(redacted, rv)
        redacted_event = Event(redacted, rv)
        assert redacted_event.event_id == event.event_id
        verify_event_signatures(redacted_event, group.keys)
        # The content hash still covers the full content, so it tells the copies apart.
        assert check_content_hash(redacted) == (redacted["content"] == event.pdu["content"])


def test_tampered_copies_fail(group: Group) -> None:
    rv = group.room_version
    for event in group.events:
        content_changed = copy.deepcopy(event.pdu)
        content_changed["content"]["tampered"] = True
        assert not check_content_hash(content_changed)

        ts_changed = copy.deepcopy(event.pdu)
        ts_changed["origin_server_ts"] += 1
        tampered = Event(ts_changed, rv, event_id=event.event_id)
        with pytest.raises(SignatureError):
            verify_event_signatures(tampered, group.keys)
        if not rv.event_id_in_event:
            assert Event(ts_changed, rv).event_id != event.event_id

        wrong_server = copy.deepcopy(event.pdu)
        sigs = wrong_server["signatures"]
        sigs[event.origin] = {
            k: ("A" if v[0] != "A" else "B") + v[1:] for k, v in sigs[event.origin].items()
        }
        with pytest.raises(SignatureError):
            verify_event_signatures(Event(wrong_server, rv, event.event_id), group.keys)
