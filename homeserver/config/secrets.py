"""Secrets that are not configured: generated once, kept in a file next to the database.

This is the one startup side effect of the config package; `load_config` itself never
writes anything.
"""

from __future__ import annotations

import logging
import os
import secrets as _secrets
from collections.abc import Mapping
from dataclasses import replace

import yaml

from homeserver.config.model import Config, ConfigError, SecretsConfig

_SHARED = "registration_shared_secret"
_SECRET_NAMES = (_SHARED, "macaroon_secret_key", "form_secret")


def ensure_secrets(config: Config) -> Config:
    """Fill unset secrets from `config.secrets_path`, creating that file once if absent.

    The file is written exclusively (never overwritten) with mode 0600; values set in the
    config file win over it. A broken secrets file is a ConfigError, not a silent reset,
    because regenerating would log everyone out and invalidate issued tokens.
    """
    path = config.secrets_path
    if path.exists():
        try:
            stored = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError([f"{path}: cannot read the secrets file: {exc}"]) from None
        if not isinstance(stored, Mapping):
            raise ConfigError([f"{path}: the secrets file must be a YAML mapping"])
        missing = [n for n in _SECRET_NAMES if not isinstance(stored.get(n), str) or not stored[n]]
        if missing:
            raise ConfigError(
                [f"{path}: missing or empty {', '.join(missing)}; add them or move the file away"]
            )
    else:
        stored = {name: _secrets.token_urlsafe(32) for name in _SECRET_NAMES}
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "# Generated on first start. Keep private; do not edit while running.\n"
        text += yaml.safe_dump(dict(stored), default_flow_style=False)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        logging.getLogger(__name__).info("Generated secrets in %s", path)
    return replace(
        config,
        registration=replace(
            config.registration,
            shared_secret=(
                config.registration.shared_secret
                or (None if config.registration.shared_secret_disabled else stored[_SHARED])
            ),
        ),
        secrets=SecretsConfig(
            macaroon_secret_key=config.secrets.macaroon_secret_key or stored["macaroon_secret_key"],
            form_secret=config.secrets.form_secret or stored["form_secret"],
        ),
    )


def read_stored_shared_secret(config: Config) -> str | None:
    """The registration shared secret without creating anything (for `register-user -c`)."""
    if config.registration.shared_secret:
        return config.registration.shared_secret
    if config.registration.shared_secret_disabled:
        return None
    try:
        stored = yaml.safe_load(config.secrets_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    value = stored.get("registration_shared_secret") if isinstance(stored, Mapping) else None
    return value if isinstance(value, str) and value else None
