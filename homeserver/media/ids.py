"""Media IDs and origins: what may name a file in the media store.

Every path under media_store_path is built from a validated media ID (ours are 24
random URL-safe characters; remote ones must match the spec's grammar) and a validated
server name, so no request can reach outside the store with `..`, `/` or NUL.
"""

from __future__ import annotations

import re
import secrets

from homeserver.errors import MatrixError, not_found
from homeserver.ids import is_valid_server_name

# The spec's media ID grammar ([A-Za-z0-9_-]+), with a length bound of our own.
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
MEDIA_ID_LENGTH = 24


def new_media_id() -> str:
    """Unguessable: 24 characters of the URL-safe alphabet (143 random bits)."""
    return secrets.token_urlsafe(18)


def is_valid_media_id(media_id: str) -> bool:
    return _MEDIA_ID.fullmatch(media_id) is not None


def is_valid_origin(server_name: str) -> bool:
    """A server name that is also a safe folder name."""
    return (
        is_valid_server_name(server_name)
        and not server_name.startswith(".")
        and "/" not in server_name
        and len(server_name) <= 255
    )


def check_media_ref(server_name: str, media_id: str) -> None:
    """404 M_NOT_FOUND for references that cannot name any media (Synapse's answer)."""
    if not is_valid_origin(server_name):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid server name")
    if not is_valid_media_id(media_id):
        raise not_found("Media not found")


def parse_mxc(uri: str) -> tuple[str, str] | None:
    """(server_name, media_id) of a valid mxc:// URI, else None."""
    if not uri.startswith("mxc://"):
        return None
    server_name, _, media_id = uri[len("mxc://") :].partition("/")
    if is_valid_origin(server_name) and is_valid_media_id(media_id):
        return server_name, media_id
    return None
