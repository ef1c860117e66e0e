"""Signing in with a JSON Web Token (Synapse's jwt_config, org.matrix.login.jwt), as a
portal's users meet it: the flow is offered, a token signed with the configured key
signs its subject in (the account made on first use, with the display name claim),
and forged, expired, foreign or mis-addressed tokens are refused with 403."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from homeserver.app import create_app
from homeserver.config import ConfigError
from tests.client.helpers import auth

C = "/_matrix/client/v3"
SECRET = "portal-secret-that-is-long-enough-for-hs256"
SETTINGS = {
    "enabled": True,
    "secret": SECRET,
    "algorithm": "HS256",
    "display_name_claim": "name",
    "issuer": "https://portal.test",
    "audiences": ["matrix"],
}


def _token(key: Any = SECRET, alg: str = "HS256", **claims: Any) -> str:
    body = {"sub": "carol", "iss": "https://portal.test", "aud": "matrix", "name": "Carol C",
            "exp": int(time.time()) + 300, **claims}  # fmt: skip
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg)


def _hmac_token(key: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token keyed by `key` whatever it is (PyJWT refuses to make this one)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


async def _login(client: Any, token: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"{C}/login", json={"type": "org.matrix.login.jwt", "token": token})
    return resp.status, await resp.json()


async def test_a_portal_token_signs_its_user_in(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config(jwt_config=SETTINGS)))
    flows = (await (await client.get(f"{C}/login")).json())["flows"]
    assert {"type": "org.matrix.login.jwt"} in flows
    status, body = await _login(client, _token())
    assert status == 200 and body["user_id"] == "@carol:test.local"
    resp = await client.get(f"{C}/profile/@carol:test.local/displayname")
    assert (await resp.json())["displayname"] == "Carol C"
    # The same subject again: the same account, a second device.
    status, again = await _login(client, _token())
    assert again["user_id"] == "@carol:test.local" and again["device_id"] != body["device_id"]
    resp = await client.get(f"{C}/account/whoami", headers=auth(again["access_token"]))
    assert (await resp.json())["user_id"] == "@carol:test.local"


async def test_lying_tokens_are_refused(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config(jwt_config=SETTINGS)))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = {
        "wrong secret": _token(key="another-secret-that-is-long-enough-to-be-used"),
        "expired": _token(exp=int(time.time()) - 10),
        "other issuer": _token(iss="https://evil.test"),
        "other audience": _token(aud="elsewhere"),
        "no audience claim": _token(aud=None),
        "another algorithm": _token(key=other_key, alg="RS256"),
        "alg none": jwt.encode(
            {"sub": "carol", "iss": "https://portal.test", "aud": "matrix"},
            key=None,
            algorithm="none",
        ),  # fmt: skip
        "no subject": _token(sub=None),
    }
    for why, token in forged.items():
        status, body = await _login(client, token)
        assert (status, body.get("errcode")) == (403, "M_FORBIDDEN"), why
    status, body = await _login(client, _token(sub="Not A Valid/Name!"))
    assert status == 400 and body["errcode"] == "M_INVALID_USERNAME"


async def test_an_asymmetric_key_verifies_with_its_public_half(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = {**SETTINGS, "secret": public.decode(), "algorithm": "RS256"}
    client = await aiohttp_client(create_app(tmp_config(jwt_config=settings)))
    status, body = await _login(client, _token(key=private, alg="RS256"))
    assert status == 200 and body["user_id"] == "@carol:test.local"
    # The public key used as an HMAC secret (the classic confusion) is refused.
    status, _ = await _login(
        client, _hmac_token(public, {"sub": "carol", "aud": "matrix", "iss": "https://portal.test"})
    )
    assert status == 403


async def test_without_jwt_config_the_type_is_unknown(aiohttp_client: Any, tmp_config: Any) -> None:
    client = await aiohttp_client(create_app(tmp_config()))
    flows = (await (await client.get(f"{C}/login")).json())["flows"]
    assert {"type": "org.matrix.login.jwt"} not in flows
    status, body = await _login(client, _token())
    assert (status, body["errcode"]) == (400, "M_UNKNOWN")


def test_the_algorithm_and_secret_are_required(tmp_config: Any) -> None:
    with pytest.raises(ConfigError, match="jwt_config.algorithm"):
        tmp_config(jwt_config={"enabled": True, "secret": "x", "algorithm": "none"})
    with pytest.raises(ConfigError, match="jwt_config.secret"):
        tmp_config(jwt_config={"enabled": True, "algorithm": "HS256"})


async def test_a_subjects_first_sign_ins_at_once_make_one_account(
    aiohttp_client: Any, tmp_config: Any
) -> None:
    """A user opening the portal on several devices at once: every first sign-in
    creates or finds the same account (the one that loses the race to register
    signs in to the winner's), each on a device of its own."""
    client = await aiohttp_client(create_app(tmp_config(jwt_config=SETTINGS)))
    answers = await asyncio.gather(*(_login(client, _token(sub="dora")) for _ in range(8)))
    assert [status for status, _ in answers] == [200] * 8, answers
    assert {body["user_id"] for _, body in answers} == {"@dora:test.local"}
    assert len({body["device_id"] for _, body in answers}) == 8
    for _, body in answers:
        resp = await client.get(f"{C}/account/whoami", headers=auth(body["access_token"]))
        assert (await resp.json())["user_id"] == "@dora:test.local"
    devices = await (
        await client.get(f"{C}/devices", headers=auth(answers[0][1]["access_token"]))
    ).json()
    assert len(devices["devices"]) == 8
