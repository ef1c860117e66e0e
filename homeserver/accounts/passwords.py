"""Password hashing with argon2id (libsodium via PyNaCl), off the event loop.

Hashing is deliberately slow and memory-hard, so both hashing and verifying run in a
worker thread (`asyncio.to_thread`): a login never stalls other requests. Passwords are
NFKC-normalised first so the same password typed on different keyboards matches.
"""

from __future__ import annotations

import asyncio
import unicodedata

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from homeserver.config import PasswordHashingConfig
from homeserver.config.accounts_model import PasswordPolicy
from homeserver.errors import MatrixError

# Longer passwords are refused before hashing (Synapse's limit too).
MAX_PASSWORD_LENGTH = 512


def _encode(password: str) -> bytes:
    return unicodedata.normalize("NFKC", password).encode("utf-8")


def check_password_policy(policy: PasswordPolicy, password: str) -> None:
    """Synapse's password_config.policy, with its error codes (Element shows them)."""
    if len(password) < policy.minimum_length:
        raise MatrixError(
            400,
            "M_PASSWORD_TOO_SHORT",
            f"The password must be at least {policy.minimum_length} characters long",
        )
    checks = (
        (policy.require_digit, str.isdigit, "M_PASSWORD_NO_DIGIT", "a digit"),
        (policy.require_lowercase, str.islower, "M_PASSWORD_NO_LOWERCASE", "a lowercase letter"),
        (policy.require_uppercase, str.isupper, "M_PASSWORD_NO_UPPERCASE", "an uppercase letter"),
        (policy.require_symbol, lambda c: not c.isalnum(), "M_PASSWORD_NO_SYMBOL", "a symbol"),
    )
    for required, test, errcode, what in checks:
        if required and not any(test(c) for c in password):
            raise MatrixError(400, errcode, f"The password must contain {what}")


def password_policy_json(policy: PasswordPolicy) -> dict[str, object]:
    """GET /password_policy (MSC2000, as Synapse serves it)."""
    return {
        "m.minimum_length": policy.minimum_length,
        "m.require_digit": policy.require_digit,
        "m.require_symbol": policy.require_symbol,
        "m.require_lowercase": policy.require_lowercase,
        "m.require_uppercase": policy.require_uppercase,
    }


# Hashes computed at once: each holds `memlimit` bytes, so a burst of logins queues
# (about 10 ms a hash) rather than multiplying the server's memory.
MAX_CONCURRENT_HASHES = 1


class PasswordHasher:
    def __init__(self, config: PasswordHashingConfig = PasswordHashingConfig()) -> None:
        self._opslimit = config.opslimit
        self._memlimit = config.memlimit
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_HASHES)

    def _hash(self, password: str) -> str:
        raw = argon2id.str(_encode(password), opslimit=self._opslimit, memlimit=self._memlimit)
        return raw.decode("ascii")

    async def hash(self, password: str) -> str:
        """An argon2id PHC string (`$argon2id$v=19$m=...`) for `password`."""
        async with self._slots:
            return await asyncio.to_thread(self._hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; False for a missing or unreadable hash."""
        if not password_hash or not password_hash.startswith("$argon2id$"):
            return False
        async with self._slots:
            return await asyncio.to_thread(_verify, password_hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return bool(argon2id.verify(password_hash.encode("ascii"), _encode(password)))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False
