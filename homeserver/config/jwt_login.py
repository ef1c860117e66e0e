"""Synapse's `jwt_config`: signing in with a JSON Web Token a trusted portal issued
(login type `org.matrix.login.jwt`). Keys: `enabled`, `secret` (the HMAC secret, or
the PEM public key of an asymmetric algorithm), `algorithm` (required, e.g. HS256 or
RS256), `subject_claim` ("sub": the user's localpart), `display_name_claim` (a new
account's display name), `issuer` and `audiences` (required to match when set; a
token with an audience is refused when none is configured, as in Synapse). Needs
PyJWT (`pip install 'homeserver[oidc]'`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.config.reader import Reader

_KEYS = frozenset(
    {
        "enabled",
        "secret",
        "algorithm",
        "subject_claim",
        "display_name_claim",
        "issuer",
        "audiences",
    }
)
ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
     "PS256", "PS384", "PS512", "EdDSA"}
)  # fmt: skip


@dataclass(frozen=True)
class JwtLoginConfig:
    secret: str
    algorithm: str
    subject_claim: str = "sub"
    display_name_claim: str | None = None
    issuer: str | None = None
    audiences: tuple[str, ...] = ()


def read_jwt_login(r: Reader, top: Mapping[str, Any]) -> JwtLoginConfig | None:
    section = r.mapping(top.get("jwt_config"), "jwt_config")
    if section is None:
        return None
    r.check_keys(section, _KEYS, "jwt_config")
    if not r.bool(section, "enabled", "jwt_config", False):
        return None
    secret = r.str(section, "secret", "jwt_config")
    algorithm = r.str(section, "algorithm", "jwt_config")
    if not secret:
        r.problem("jwt_config.secret", "required: the secret or public key tokens are signed with")
    if algorithm not in ALGORITHMS:
        r.problem("jwt_config.algorithm", f"expected one of {', '.join(sorted(ALGORITHMS))}")
    try:
        import jwt  # noqa: F401  (PyJWT: the oidc extra)
    except ImportError:
        r.problem("jwt_config", "needs PyJWT: pip install 'homeserver[oidc]'")
    return JwtLoginConfig(
        secret=secret or "",
        algorithm=algorithm or "HS256",
        subject_claim=r.str(section, "subject_claim", "jwt_config") or "sub",
        display_name_claim=r.str(section, "display_name_claim", "jwt_config"),
        issuer=r.str(section, "issuer", "jwt_config"),
        audiences=tuple(r.str_list(section, "audiences", "jwt_config") or ()),
    )
