"""Random secrets handed to clients: access/refresh/login tokens, device and session IDs.

Tokens carry a short prefix so a leaked one is recognisable (and greppable in logs);
everything after it is 256 bits from `secrets`.
"""

from __future__ import annotations

import secrets
import string

_DEVICE_ALPHABET = string.ascii_uppercase
_LOCALPART_ALPHABET = string.ascii_lowercase + string.digits


def access_token() -> str:
    return "mat_" + secrets.token_urlsafe(32)


def refresh_token() -> str:
    return "mrt_" + secrets.token_urlsafe(32)


def login_token() -> str:
    return "mlt_" + secrets.token_urlsafe(32)


def session_id() -> str:
    return secrets.token_urlsafe(18)


def device_id() -> str:
    """Ten upper-case letters, like Synapse's device IDs."""
    return "".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(10))


def localpart() -> str:
    """A generated username for registrations that give none (never purely numeric)."""
    return "u" + "".join(secrets.choice(_LOCALPART_ALPHABET) for _ in range(11))


def numeric_localpart() -> str:
    """A guest's localpart: digits only, which registration refuses to anyone else."""
    return str(secrets.randbelow(9 * 10**11) + 10**11)
