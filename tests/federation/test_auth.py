"""X-Matrix signing and verification, checked against real Synapse traffic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from signedjson.key import decode_verify_key_bytes, generate_signing_key, get_verify_key

from federation.auth import (
    XMatrixAuth,
    decode_unpadded_base64,
    parse_x_matrix,
    sign_request,
    verify_request,
)

CAPTURES = Path("/work/shared/interop/captures")


def _load_keys(path: Path) -> dict[tuple[str, str], object]:
    keys = {}
    for server, doc in json.loads(path.read_text()).items():
        for key_id, entry in doc["verify_keys"].items():
            keys[(server, key_id)] = decode_verify_key_bytes(
                key_id, decode_unpadded_base64(entry["key"])
            )
    return keys


def _signed_requests() -> list[tuple[str, dict, dict]]:
    """Every recorded request that carries an Authorization header, with its key set."""
    out = []
    sets = [(CAPTURES, ["raw-hs1.jsonl", "raw-hs2.jsonl"])]
    rv = CAPTURES / "by-room-version"
    sets.append((rv, sorted(p.name for p in rv.glob("v*-raw-hs*.jsonl"))))
    for folder, names in sets:
        keys = _load_keys(folder / "server_keys.json")
        for name in names:
            for line in (folder / name).read_text().splitlines():
                exchange = json.loads(line)
                if "Authorization" in exchange["request_headers"]:
                    out.append((f"{folder.name}/{name}#{exchange['seq']}", exchange, keys))
    return out


SIGNED = _signed_requests()


def test_captures_are_present_and_numerous() -> None:
    assert len(SIGNED) > 400
    methods = {ex["method"] for _, ex, _ in SIGNED}
    assert {"GET", "PUT"} <= methods
    # Some recorded URIs carry percent-encoding: those prove we sign the raw form.
    assert any("%24" in ex["path"] or "%21" in ex["path"] for _, ex, _ in SIGNED)


def _check(exchange: dict, keys: dict, **override) -> bool:
    auth = parse_x_matrix(exchange["request_headers"]["Authorization"])
    key = keys[(auth.origin, auth.key_id)]
    args = {
        "method": exchange["method"],
        "uri": exchange["path"],
        "destination_expected": exchange["to_server"],
        "content": exchange["request_body"],
    }
    args.update(override)
    return verify_request(auth, verify_key=key, **args)


def test_every_captured_request_verifies_over_the_exact_uri() -> None:
    failures = [label for label, ex, keys in SIGNED if not _check(ex, keys)]
    assert failures == []


def test_sequence_json_requests_are_all_in_raw_logs_and_verify() -> None:
    seq = json.loads((CAPTURES / "sequence.json").read_text())
    keys = _load_keys(CAPTURES / "server_keys.json")
    raw = {}
    for name in ("raw-hs1.jsonl", "raw-hs2.jsonl"):
        for line in (CAPTURES / name).read_text().splitlines():
            ex = json.loads(line)
            if "Authorization" in ex["request_headers"]:
                raw.setdefault((ex["method"], ex["path"], ex["to_server"]), []).append(ex)
    assert len(seq) > 100
    for item in seq:
        matches = raw[(item["method"], item["path"], item["to"])]
        assert any(_check(ex, keys) for ex in matches), item["path"]
        assert parse_x_matrix(matches[0]["request_headers"]["Authorization"]).origin == item["from"]


@pytest.mark.parametrize("mutation", ["uri", "decoded_uri", "body", "destination", "method"])
def test_altered_requests_fail(mutation: str) -> None:
    checked = 0
    for _, ex, keys in SIGNED[:200]:
        if mutation == "uri":
            override = {"uri": ex["path"] + ("&x=1" if "?" in ex["path"] else "?x=1")}
        elif mutation == "decoded_uri":
            if "%" not in ex["path"]:
                continue
            from urllib.parse import unquote

            override = {"uri": unquote(ex["path"])}
        elif mutation == "body":
            if ex["request_body"] is None:
                override = {"content": {}}
            else:
                override = {"content": {**ex["request_body"], "extra": 1}}
        elif mutation == "destination":
            override = {"destination_expected": "evil.example.org"}
        else:
            override = {"method": "POST" if ex["method"] != "POST" else "PUT"}
        assert _check(ex, keys, **override) is False, (mutation, ex["path"])
        checked += 1
    assert checked > 10


def test_missing_destination_uses_receiver_name() -> None:
    key = generate_signing_key("k1")
    header = sign_request("GET", "/_matrix/x?a=b", "a.example", "b.example", None, key)
    full = parse_x_matrix(header)
    legacy = XMatrixAuth(full.origin, None, full.key_id, full.signature)
    vk = get_verify_key(key)
    assert verify_request(legacy, "GET", "/_matrix/x?a=b", "b.example", None, vk)
    assert not verify_request(legacy, "GET", "/_matrix/x?a=b", "c.example", None, vk)


def test_sign_roundtrip_with_body_and_format() -> None:
    key = generate_signing_key("abc")
    body = {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"x": "é"}}]}
    header = sign_request(
        "put", "/_matrix/federation/v1/send/1", "o.example", "d.example:8448", body, key
    )
    assert header.startswith(
        'X-Matrix origin="o.example",destination="d.example:8448",key="ed25519:abc",sig="'
    )
    auth = parse_x_matrix(header)
    assert auth == XMatrixAuth("o.example", "d.example:8448", "ed25519:abc", auth.signature)
    vk = get_verify_key(key)
    assert verify_request(auth, "PUT", "/_matrix/federation/v1/send/1", "d.example:8448", body, vk)
    other = get_verify_key(generate_signing_key("abc"))
    assert not verify_request(
        auth, "PUT", "/_matrix/federation/v1/send/1", "d.example:8448", body, other
    )
    assert not verify_request(
        auth, "PUT", "/_matrix/federation/v1/send/1", "d.example:8448", None, vk
    )


def test_parse_variants() -> None:
    a = parse_x_matrix(
        'x-matrix  Origin=a.example:8448 , KEY="ed25519:k", sig="s\\"ig,x",destination="d"'
    )
    assert a == XMatrixAuth("a.example:8448", "d", "ed25519:k", 's"ig,x')
    b = parse_x_matrix('X-Matrix origin="o",key="ed25519:k",sig="AAAA",future="x, y"')
    assert b == XMatrixAuth("o", None, "ed25519:k", "AAAA")
    c = parse_x_matrix("X-Matrix origin=o,,key=ed25519:k,sig=AAAA,")
    assert c.key_id == "ed25519:k" and c.signature == "AAAA"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer abc",
        "X-Matrix",
        'X-Matrix key="ed25519:k",sig="s"',
        'X-Matrix origin="o",sig="s"',
        'X-Matrix origin="o",key="ed25519:k"',
        'X-Matrix origin="",key="ed25519:k",sig="s"',
        'X-Matrix origin="o,key="ed25519:k",sig="s"',
        'X-Matrix origin="o",origin="p",key="k",sig="s"',
        'X-Matrix origin="o" key="k",sig="s"',
        "X-Matrix origin",
        'X-Matrix origin="o",key="k",sig="s",destination=""',
    ],
)
def test_parse_rejects(header: str) -> None:
    with pytest.raises(ValueError):
        parse_x_matrix(header)


def test_bad_signature_encoding_is_false_not_error() -> None:
    key = generate_signing_key("k")
    auth = XMatrixAuth("o", "d", "ed25519:k", "!!!not base64!!!")
    assert verify_request(auth, "GET", "/", "d", None, get_verify_key(key)) is False
