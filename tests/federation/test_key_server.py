"""GET /_matrix/key/v2/server and the signing key file handling behind it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from signedjson.key import decode_verify_key_bytes, generate_signing_key, write_signing_keys
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64

from federation.appkeys import SERVER_KEYS
from federation.keys import (
    ServerKeys,
    SigningKeyError,
    load_or_create_signing_keys,
    read_key_file,
)
from homeserver.app import create_app

OLD_KEY = "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"


def verify_document(doc: dict[str, Any]) -> None:
    """Check the document's signature by each of its own verify_keys (raises if bad)."""
    server = doc["server_name"]
    assert set(doc["signatures"][server]) == set(doc["verify_keys"])
    for key_id, entry in doc["verify_keys"].items():
        verify_key = decode_verify_key_bytes(key_id, decode_base64(entry["key"]))
        verify_signed_json(doc, server, verify_key)


async def test_key_document_is_self_signed_and_fresh(aiohttp_client: Any, tmp_config) -> None:
    config = tmp_config(
        old_signing_keys={"ed25519:old1": {"key": OLD_KEY, "expired_ts": 1_600_000_000_000}},
        key_refresh_interval="2h",
    )
    client = await aiohttp_client(create_app(config))
    before = int(time.time() * 1000)
    response = await client.get("/_matrix/key/v2/server")
    assert response.status == 200
    doc = await response.json()
    assert doc["server_name"] == "test.local"
    (key_id,) = doc["verify_keys"]
    assert key_id.startswith("ed25519:a_")
    loaded = client.server.app[SERVER_KEYS]
    assert key_id == f"ed25519:{loaded.primary.version}"
    assert doc["old_verify_keys"] == {
        "ed25519:old1": {"key": OLD_KEY, "expired_ts": 1_600_000_000_000}
    }
    assert before + 2 * 3_600_000 <= doc["valid_until_ts"] <= int(time.time() * 1000) + 7_200_000
    verify_document(doc)

    doc["valid_until_ts"] += 1  # tampering must break the signature
    with pytest.raises(Exception, match="[Ss]ignature"):
        verify_document(doc)

    # The deprecated per-key form answers with the same keys.
    same = await (await client.get(f"/_matrix/key/v2/server/{key_id}")).json()
    assert (
        same["verify_keys"]
        == (await (await client.get("/_matrix/key/v2/server")).json())["verify_keys"]
    )


async def test_key_survives_restart(aiohttp_client: Any, tmp_config) -> None:
    first = await aiohttp_client(create_app(tmp_config()))
    keys_1 = (await (await first.get("/_matrix/key/v2/server")).json())["verify_keys"]
    await first.close()
    second = await aiohttp_client(create_app(tmp_config()))
    keys_2 = (await (await second.get("/_matrix/key/v2/server")).json())["verify_keys"]
    assert keys_1 == keys_2


async def test_not_served_without_federation_or_keys_listener(
    aiohttp_client: Any, tmp_config
) -> None:
    config = tmp_config(listeners=[{"port": 0, "resources": [{"names": ["client"]}]}])
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/_matrix/key/v2/server")).status == 404


def test_every_current_key_signs(tmp_path: Path) -> None:
    keys = [generate_signing_key("a_one"), generate_signing_key("a_two")]
    path = tmp_path / "multi.key"
    with path.open("w") as f:
        write_signing_keys(f, keys)
    loaded = read_key_file(path)
    server_keys = ServerKeys("multi.test", tuple(loaded), {}, 60_000)
    doc = server_keys.key_document(now_ms=1000)
    assert doc["valid_until_ts"] == 61_000
    assert set(doc["verify_keys"]) == {"ed25519:a_one", "ed25519:a_two"}
    verify_document(doc)


def test_key_file_is_created_once_in_synapse_format(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "server.signing.key"
    keys, created = load_or_create_signing_keys(path)
    assert created
    alg, version, seed = path.read_text().split()
    assert (alg, version) == ("ed25519", keys[0].version)
    assert len(decode_base64(seed)) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    again, created = load_or_create_signing_keys(path)
    assert not created and again[0].encode() == keys[0].encode()
    assert [p.name for p in path.parent.iterdir()] == ["server.signing.key"]  # no temp left


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage\n", b"ed25519 a_x AAAA\n", b"rsa a_x " + b"A" * 43 + b"\n", b"\xff\xfe\x00"],
)
def test_bad_key_file_is_an_error_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "server.signing.key"
    path.write_bytes(content)
    with pytest.raises(SigningKeyError) as info:
        load_or_create_signing_keys(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content
