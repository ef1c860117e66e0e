"""Talking to one OpenID Connect provider: discovery, the authorization URL, the code
exchange, and checking the ID token (PyJWT: signature with the provider's published
keys, issuer, audience, expiry, our nonce).

Bounds: every request to the provider has REQUEST_TIMEOUT_S and its answer is read up
to MAX_ANSWER_BYTES; discovery and keys are cached (METADATA_TTL_S), and an unknown
key ID refetches the keys at most once per KEYS_REFETCH_S (a forged token naming new
key IDs cannot make us hammer the provider). The provider's URLs are the operator's
configuration, so no outbound IP policy applies (an IdP is often on the local network).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp

from homeserver.config.accounts_model import OidcProviderConfig

REQUEST_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 1024 * 1024
METADATA_TTL_S = 3600.0
KEYS_REFETCH_S = 60.0
# Asymmetric algorithms only: never "none", never HS* (which would make the client
# secret a signing key anyone holding it could use).
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


class OidcError(Exception):
    """The provider failed or answered something we must not trust."""


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcProvider:
    def __init__(self, config: OidcProviderConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: Any = None
        self._keys_at = 0.0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                headers={"User-Agent": "homeserver-py oidc"},
            )
        return self._session

    async def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._http().request(method, url, **kwargs) as answer:
                raw = await answer.content.read(MAX_ANSWER_BYTES + 1)
                if len(raw) > MAX_ANSWER_BYTES:
                    raise OidcError(f"{url} answered more than {MAX_ANSWER_BYTES} bytes")
                if answer.status != 200:
                    raise OidcError(f"{url} answered {answer.status}: {raw[:200]!r}")
                body = json.loads(raw)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OidcError(f"{url}: {exc}") from None
        if not isinstance(body, dict):
            raise OidcError(f"{url} did not answer a JSON object")
        return body

    async def metadata(self) -> dict[str, Any]:
        """The provider's endpoints: discovered (cached), with the config's own winning."""
        c = self.config
        if c.discover and (
            self._metadata is None or time.monotonic() - self._metadata_at > METADATA_TTL_S
        ):
            url = c.issuer.rstrip("/") + "/.well-known/openid-configuration"
            found = await self._json("GET", url)
            if found.get("issuer") != c.issuer:
                raise OidcError(f"discovery says issuer {found.get('issuer')!r}, not {c.issuer!r}")
            self._metadata, self._metadata_at = found, time.monotonic()
        metadata = dict(self._metadata or {})
        for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
            if getattr(c, key):
                metadata[key] = getattr(c, key)
        return metadata

    async def uses_pkce(self) -> bool:
        method = self.config.pkce_method
        if method != "auto":
            return method == "always"
        supported = (await self.metadata()).get("code_challenge_methods_supported") or []
        return "S256" in supported

    async def authorization_url(
        self, *, state: str, nonce: str, redirect_uri: str, code_verifier: str | None
    ) -> str:
        endpoint = (await self.metadata()).get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise OidcError("the provider has no authorization_endpoint")
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.config.scopes),
            "state": state,
            "nonce": nonce,
        }
        if code_verifier is not None:
            query |= {
                "code_challenge": pkce_challenge(code_verifier),
                "code_challenge_method": "S256",
            }
        separator = "&" if "?" in endpoint else "?"
        return f"{endpoint}{separator}{urlencode(query)}"

    async def user_claims(
        self, code: str, *, nonce: str, redirect_uri: str, code_verifier: str | None
    ) -> dict[str, Any]:
        """Exchange the code and answer who signed in: the ID token's checked claims,
        or the userinfo endpoint's answer (user_profile_method, or no ID token)."""
        metadata = await self.metadata()
        endpoint = metadata.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise OidcError("the provider has no token_endpoint")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        c = self.config
        headers = {}
        if c.client_auth_method == "client_secret_basic":
            # RFC 6749 2.3.1: each part form-encoded, then HTTP Basic.
            pair = f"{quote_plus(c.client_id)}:{quote_plus(c.client_secret or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = c.client_id
            if c.client_auth_method == "client_secret_post":
                form["client_secret"] = c.client_secret or ""
        tokens = await self._json("POST", endpoint, data=form, headers=headers)
        claims: dict[str, Any] = {}
        id_token = tokens.get("id_token")
        if "openid" in c.scopes:
            if not isinstance(id_token, str):
                raise OidcError("no id_token in the token answer")
            claims = await self._check_id_token(id_token, nonce, metadata)
        if c.user_profile_method == "userinfo_endpoint" or not claims:
            userinfo = metadata.get("userinfo_endpoint")
            access = tokens.get("access_token")
            if not isinstance(userinfo, str) or not isinstance(access, str):
                raise OidcError("no ID token and no userinfo endpoint to ask")
            info = await self._json("GET", userinfo, headers={"Authorization": f"Bearer {access}"})
            if claims and info.get("sub") != claims.get("sub"):
                raise OidcError("userinfo is about another subject than the ID token")
            claims = {**claims, **info}
        return claims

    async def _signing_key(self, kid: str | None, metadata: dict[str, Any]) -> Any:
        import jwt  # PyJWT (the oidc extra; the config check says so when missing)

        uri = metadata.get("jwks_uri")
        if not isinstance(uri, str):
            raise OidcError("the provider publishes no jwks_uri")
        for attempt in range(2):
            stale = time.monotonic() - self._keys_at > METADATA_TTL_S
            if self._keys is None or stale or attempt == 1:
                if attempt == 1 and time.monotonic() - self._keys_at < KEYS_REFETCH_S:
                    break
                try:
                    self._keys = jwt.PyJWKSet.from_dict(await self._json("GET", uri))
                except jwt.PyJWTError as exc:
                    raise OidcError(f"the provider's keys: {exc}") from None
                self._keys_at = time.monotonic()
            keys = [k for k in self._keys.keys if kid is None or k.key_id == kid]
            if keys:
                return keys[0]
        raise OidcError(f"no key {kid!r} among the provider's keys")

    async def _check_id_token(
        self, id_token: str, nonce: str, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        import jwt

        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise OidcError(f"id_token: {exc}") from None
        if header.get("alg") not in ALGORITHMS:
            raise OidcError(f"id_token signed with {header.get('alg')!r}, not accepted")
        key = await self._signing_key(header.get("kid"), metadata)
        try:
            claims = jwt.decode(
                id_token,
                key=key.key,
                algorithms=[header["alg"]],
                audience=self.config.client_id,
                issuer=self.config.issuer,
                leeway=60,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcError(f"id_token: {exc}") from None
        if claims.get("nonce") != nonce:
            raise OidcError("id_token's nonce is not the one we sent")
        return dict(claims)
