"""Our own server signing keys and the `/_matrix/key/v2/server` document built from them.

Key file format is Synapse's (`<alg> <version> <unpadded base64 seed>` per line), so a
Synapse key file can be reused and vice versa. A missing file is created once with a
fresh `ed25519:a_XXXX` key; an unreadable or corrupt file is an error, never silently
replaced: a new key would make every event we ever signed unverifiable by peers that
cached the old one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import string
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signedjson.key import (
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
    read_signing_keys,
    write_signing_keys,
)
from signedjson.sign import sign_json
from signedjson.types import SigningKey, VerifyKey

from homeserver.config import Config, OldVerifyKey


class SigningKeyError(Exception):
    """The signing key file cannot be used; the message says which file and why."""


def key_id(key: SigningKey | VerifyKey) -> str:
    return f"{key.alg}:{key.version}"


def _new_key_version() -> str:
    alphabet = string.ascii_letters + string.digits
    return "a_" + "".join(secrets.choice(alphabet) for _ in range(4))


def read_key_file(path: Path) -> list[SigningKey]:
    """Parse a Synapse-format key file; SigningKeyError if unreadable, corrupt or empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SigningKeyError(f"signing key file {path} is not text; is it a key file?") from None
    try:
        keys = read_signing_keys([line for line in text.splitlines() if line.strip()])
    except Exception as exc:  # signedjson raises assorted errors for bad input
        raise SigningKeyError(
            f"signing key file {path} is corrupt ({type(exc).__name__}: {exc}); expected lines "
            "like 'ed25519 a_AbCd <base64 seed>'. Restore it from a backup; it was not changed."
        ) from None
    if not keys:
        raise SigningKeyError(f"signing key file {path} contains no keys")
    return list(keys)


def create_key_file(path: Path) -> list[SigningKey]:
    """Write a new key file without ever replacing an existing one (link, not rename)."""
    key = generate_signing_key(_new_key_version())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".signing-key-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write_signing_keys(f, [key])
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.link(tmp, path)  # fails with FileExistsError rather than overwrite
    except FileExistsError:
        raise SigningKeyError(f"signing key file {path} appeared while creating it") from None
    except OSError as exc:
        raise SigningKeyError(f"cannot create signing key file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return [key]


def load_or_create_signing_keys(path: Path) -> tuple[list[SigningKey], bool]:
    """The keys in `path`, creating the file if it does not exist; (keys, created)."""
    if path.exists() or path.is_symlink():
        return read_key_file(path), False
    return create_key_file(path), True


@dataclass(frozen=True)
class ServerKeys:
    """Our signing keys plus what we publish about past ones."""

    server_name: str
    signing_keys: tuple[SigningKey, ...]
    old_verify_keys: Mapping[str, OldVerifyKey]
    refresh_interval_ms: int = 86_400_000

    @property
    def primary(self) -> SigningKey:
        """The key new signatures use (the first in the file, as Synapse does)."""
        return self.signing_keys[0]

    def verify_keys(self) -> dict[str, VerifyKey]:
        return {key_id(k): get_verify_key(k) for k in self.signing_keys}

    def sign(self, obj: dict[str, Any], *, all_keys: bool = False) -> dict[str, Any]:
        """Add our signature(s) to `obj` in place (and return it)."""
        for key in self.signing_keys if all_keys else (self.primary,):
            sign_json(obj, self.server_name, key)
        return obj

    def key_document(self, now_ms: int | None = None) -> dict[str, Any]:
        """The signed `/_matrix/key/v2/server` response, valid for refresh_interval_ms."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        current = {
            kid: {"key": encode_verify_key_base64(vk)} for kid, vk in self.verify_keys().items()
        }
        old = {
            kid: {"key": old.key, "expired_ts": old.expired_ts}
            for kid, old in self.old_verify_keys.items()
            if kid not in current
        }
        doc: dict[str, Any] = {
            "server_name": self.server_name,
            "verify_keys": current,
            "old_verify_keys": old,
            "valid_until_ts": now_ms + self.refresh_interval_ms,
        }
        return self.sign(doc, all_keys=True)


def load_server_keys(config: Config) -> ServerKeys:
    """Load (or create on first start) the signing keys the config names."""
    keys, _created = load_or_create_signing_keys(config.keys.signing_key_path)
    return ServerKeys(
        server_name=config.server_name,
        signing_keys=tuple(keys),
        old_verify_keys=config.keys.old_signing_keys,
        refresh_interval_ms=config.keys.key_refresh_interval_ms,
    )
