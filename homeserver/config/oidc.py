"""Synapse's `oidc_providers` and `sso` keys: signing in with an OpenID Connect
identity provider (homeserver/accounts/sso.py).

Built: discovery or explicit endpoints, client_secret_basic / _post / none, PKCE, the
mapping templates (`{{ user.<claim> }}` with the `lower` and `localpart_from_email`
filters), attribute requirements, linking existing users, per-provider registration.
Not built, and refused at load rather than ignored: signing client assertions
(`client_secret_jwt_key`), back-channel logout, a custom mapping provider module,
asking the user to pick or confirm a username (so `localpart_template` is needed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from homeserver.config.accounts_model import OidcProviderConfig, SsoConfig
from homeserver.config.reader import Reader

SSO_KEYS = ("oidc_providers", "sso")

_PROVIDER_KEYS = frozenset(
    {
        "idp_id",
        "idp_name",
        "idp_icon",
        "idp_brand",
        "discover",
        "issuer",
        "client_id",
        "client_secret",
        "client_auth_method",
        "pkce_method",
        "scopes",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "skip_verification",
        "user_profile_method",
        "allow_existing_users",
        "user_mapping_provider",
        "attribute_requirements",
        "enable_registration",
    }
)
_MAPPING_KEYS = frozenset(
    {"subject_claim", "localpart_template", "display_name_template", "email_template"}
)
# `{{ user.claim }}` or `{{ user.claim | filter }}`: all a template may be.
TEMPLATE_PART = re.compile(r"\{\{\s*user\.([A-Za-z0-9_]+)\s*(?:\|\s*([a-z_]+)\s*)?\}\}")
TEMPLATE_FILTERS = frozenset({"lower", "localpart_from_email"})
_IDP_ID = re.compile(r"[A-Za-z0-9._~-]{1,200}")


def _template(r: Reader, m: Mapping[str, Any], key: str, where: str) -> str | None:
    value = r.str(m, key, where)
    if value is None:
        return None
    rest = TEMPLATE_PART.sub("", value)
    if "{{" in rest or "{%" in rest:
        r.problem(f"{where}.{key}", "only {{ user.<claim> }} (| lower, | localpart_from_email)")
    for _claim, name in TEMPLATE_PART.findall(value):
        if name and name not in TEMPLATE_FILTERS:
            r.problem(f"{where}.{key}", f"unknown filter {name!r}")
    return str(value)


def _url(r: Reader, m: Mapping[str, Any], key: str, where: str, plain_ok: bool) -> str | None:
    value = r.str(m, key, where)
    if value is None:
        return None
    schemes = ("https://", "http://") if plain_ok else ("https://",)
    if not str(value).startswith(schemes):
        r.problem(f"{where}.{key}", "must be an https URL (or set skip_verification)")
    return str(value)


def _provider(r: Reader, raw: Any, where: str) -> OidcProviderConfig | None:
    m = r.mapping(raw, where)
    if m is None:
        return None
    for key in m:
        if isinstance(key, str) and key not in _PROVIDER_KEYS:
            r.problem(f"{where}.{key}", "not built here (or unknown); remove it")
    idp_id = r.str(m, "idp_id", where, "oidc")
    if not _IDP_ID.fullmatch(str(idp_id)):
        r.problem(f"{where}.idp_id", "letters, digits and ._~- only")
    skip = r.bool(m, "skip_verification", where, False)
    issuer = _url(r, m, "issuer", where, skip)
    client_id = r.str(m, "client_id", where)
    if issuer is None or client_id is None:
        r.problem(where, "needs issuer and client_id")
        return None
    discover = r.bool(m, "discover", where, True)
    endpoints = {
        key: _url(r, m, key, where, skip)
        for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    }
    if not discover and not (endpoints["authorization_endpoint"] and endpoints["token_endpoint"]):
        r.problem(where, "with discover: false, set authorization_endpoint and token_endpoint")
    auth_method = r.str(m, "client_auth_method", where, "client_secret_basic")
    if auth_method not in ("client_secret_basic", "client_secret_post", "none"):
        r.problem(f"{where}.client_auth_method", "client_secret_basic, client_secret_post or none")
    secret = r.str(m, "client_secret", where)
    if auth_method != "none" and secret is None:
        r.problem(f"{where}.client_secret", f"required with {auth_method}")
    profile_method = r.str(m, "user_profile_method", where, "auto")
    if profile_method not in ("auto", "userinfo_endpoint"):
        r.problem(f"{where}.user_profile_method", "auto or userinfo_endpoint")
    pkce = r.str(m, "pkce_method", where, "auto")
    if pkce not in ("auto", "always", "never"):
        r.problem(f"{where}.pkce_method", "auto, always or never")
    scopes = tuple(r.str_list(m, "scopes", where) or ["openid"])
    mapping_where = f"{where}.user_mapping_provider"
    mapper = r.mapping(m.get("user_mapping_provider"), mapping_where) or {}
    r.check_keys(mapper, {"config"}, mapping_where)
    mapping = r.mapping(mapper.get("config"), f"{mapping_where}.config") or {}
    r.check_keys(mapping, _MAPPING_KEYS, f"{mapping_where}.config")
    localpart = _template(r, mapping, "localpart_template", f"{mapping_where}.config")
    requirements = []
    for i, item in enumerate(r.list(m, "attribute_requirements", where) or []):
        req = r.mapping(item, f"{where}.attribute_requirements[{i}]") or {}
        attribute = req.get("attribute")
        value = req.get("value")
        if not isinstance(attribute, str) or (value is not None and not isinstance(value, str)):
            r.problem(f"{where}.attribute_requirements[{i}]", "expected {attribute, value}")
            continue
        requirements.append((attribute, value))
    return OidcProviderConfig(
        idp_id=f"oidc-{idp_id}" if "idp_id" in m else "oidc",
        idp_name=r.str(m, "idp_name", where, "OIDC"),
        issuer=issuer,
        client_id=client_id,
        client_secret=secret,
        client_auth_method=auth_method,
        scopes=scopes,
        discover=discover,
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        userinfo_endpoint=endpoints["userinfo_endpoint"],
        jwks_uri=endpoints["jwks_uri"],
        skip_verification=skip,
        user_profile_method=profile_method,
        allow_existing_users=r.bool(m, "allow_existing_users", where, False),
        enable_registration=r.bool(m, "enable_registration", where, True),
        pkce_method=pkce,
        idp_icon=r.str(m, "idp_icon", where),
        idp_brand=r.str(m, "idp_brand", where),
        subject_claim=r.str(mapping, "subject_claim", f"{mapping_where}.config", "sub"),
        localpart_template=localpart or "{{ user.preferred_username }}",
        display_name_template=_template(
            r, mapping, "display_name_template", f"{mapping_where}.config"
        ),
        email_template=_template(r, mapping, "email_template", f"{mapping_where}.config"),
        attribute_requirements=tuple(requirements),
    )


def read_sso(r: Reader, top: Mapping[str, Any]) -> SsoConfig:
    providers = []
    for i, raw in enumerate(r.list(top, "oidc_providers", "") or []):
        provider = _provider(r, raw, f"oidc_providers[{i}]")
        if provider is not None:
            providers.append(provider)
    ids = [p.idp_id for p in providers]
    if len(set(ids)) != len(ids):
        r.problem("oidc_providers", "each provider needs its own idp_id")
    sso = r.mapping(top.get("sso"), "sso") or {}
    r.check_keys(sso, {"client_whitelist", "update_profile_information"}, "sso")
    if providers:
        try:
            import jwt  # noqa: F401  (PyJWT, the oidc extra)
        except ImportError:
            r.problem(
                "oidc_providers",
                "needs PyJWT to check the provider's signatures: pip install 'homeserver[oidc]'",
            )
    return SsoConfig(
        providers=tuple(providers),
        client_whitelist=tuple(r.str_list(sso, "client_whitelist", "sso") or ()),
        update_profile_information=r.bool(sso, "update_profile_information", "sso", False),
    )
