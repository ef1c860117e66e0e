"""Synapse's keys for what registration asks of a human: a solved reCAPTCHA
(`enable_registration_captcha`, `recaptcha_*`) and accepting the server's policy
(`user_consent` with `require_at_registration`).

Of `user_consent` only the registration part is built (the policy page and the
`m.login.terms` stage); its keys for blocking events and server notices until a user
consents are refused at load rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from homeserver.config.accounts_model import (
    CaptchaConfig,
    ConsentConfig,
    PasswordConfig,
    PasswordPolicy,
)
from homeserver.config.reader import Reader

CAPTCHA_KEYS = (
    "enable_registration_captcha",
    "recaptcha_public_key",
    "recaptcha_public_key_path",
    "recaptcha_private_key",
    "recaptcha_private_key_path",
    "recaptcha_siteverify_api",
)
CONSENT_KEYS = ("user_consent",)
PASSWORD_KEYS = ("password_config",)
_CONSENT_SECTION = frozenset({"template_dir", "version", "policy_name", "require_at_registration"})


def read_secret(r: Reader, top: Mapping[str, Any], key: str) -> str | None:
    """A key given inline or in a file (`<key>_path`), as Synapse allows."""
    value = r.str(top, key, "")
    path = r.path(top, f"{key}_path", "", None)
    if path is None:
        return value
    if value is not None:
        r.problem(f"{key}_path", f"set only one of this and {key}")
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        r.problem(f"{key}_path", f"cannot read {path}: {exc.strerror}")
        return None


def read_captcha(r: Reader, top: Mapping[str, Any]) -> CaptchaConfig | None:
    if not r.bool(top, "enable_registration_captcha", "", False):
        return None
    public, private = (
        read_secret(r, top, "recaptcha_public_key"),
        read_secret(r, top, "recaptcha_private_key"),
    )
    if not public or not private:
        r.problem(
            "enable_registration_captcha",
            "needs recaptcha_public_key and recaptcha_private_key (your reCAPTCHA site keys)",
        )
        return None
    api = r.str(top, "recaptcha_siteverify_api", "", CaptchaConfig.siteverify_api)
    if not str(api).startswith(("https://", "http://")):
        r.problem("recaptcha_siteverify_api", "expected an http(s) URL")
    return CaptchaConfig(public, private, api)


def read_password_config(r: Reader, top: Mapping[str, Any]) -> PasswordConfig:
    """Synapse's password_config: `enabled` (and `localdb_enabled`: we have no other
    password database, so false means the same) and `policy`."""
    m = r.mapping(top.get("password_config"), "password_config") or {}
    where = "password_config"
    r.check_keys(m, {"enabled", "localdb_enabled", "policy", "pepper"}, where)
    if m.get("pepper"):
        r.problem(f"{where}.pepper", "not built here; remove it")
    enabled = r.bool(m, "enabled", where, True) and r.bool(m, "localdb_enabled", where, True)
    policy_raw = r.mapping(m.get("policy"), f"{where}.policy") or {}
    pw = f"{where}.policy"
    r.check_keys(
        policy_raw,
        {
            "enabled",
            "minimum_length",
            "require_digit",
            "require_symbol",
            "require_lowercase",
            "require_uppercase",
        },
        pw,
    )
    policy = PasswordPolicy()
    if r.bool(policy_raw, "enabled", pw, False):
        policy = PasswordPolicy(
            minimum_length=r.int(policy_raw, "minimum_length", pw, 0, 0, 512),
            require_digit=r.bool(policy_raw, "require_digit", pw, False),
            require_symbol=r.bool(policy_raw, "require_symbol", pw, False),
            require_lowercase=r.bool(policy_raw, "require_lowercase", pw, False),
            require_uppercase=r.bool(policy_raw, "require_uppercase", pw, False),
        )
    return PasswordConfig(enabled=enabled, policy=policy)


def read_consent(r: Reader, top: Mapping[str, Any]) -> ConsentConfig | None:
    m = r.mapping(top.get("user_consent"), "user_consent")
    if not m:
        return None
    where = "user_consent"
    unbuilt = sorted(k for k in m if isinstance(k, str) and k not in _CONSENT_SECTION)
    for key in unbuilt:
        r.problem(
            f"{where}.{key}",
            "not built here (only the policy at registration is); remove it",
        )
    version = m.get("version")
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = str(version)
    template_dir = r.path(m, "template_dir", where, None)
    if not isinstance(version, str) or not version or template_dir is None:
        r.problem(
            where, "needs template_dir and version (the policy is <template_dir>/en/<version>.html)"
        )
        return None
    policy_file = Path(template_dir) / "en" / f"{version}.html"
    if "/" in version or not policy_file.is_file():
        r.problem(f"{where}.version", f"no policy file {policy_file}")
        return None
    return ConsentConfig(
        version=version,
        policy_file=policy_file,
        policy_name=r.str(m, "policy_name", where, "Privacy Policy"),
        require_at_registration=r.bool(m, "require_at_registration", where, False),
    )
