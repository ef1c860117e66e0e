"""From an identity provider's claims to our user (pure): the mapping templates of
`user_mapping_provider.config` and the localpart grammar.

A template is text with `{{ user.<claim> }}` parts, optionally `| lower` or
`| localpart_from_email` (the part before the @), as Synapse's default mapping
provider offers (its templates are Jinja; these are the forms its docs show).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.config.oidc import TEMPLATE_PART
from homeserver.ids import check_new_localpart

_LOCALPART_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-/+")


def render(template: str, claims: Mapping[str, Any]) -> str:
    def part(match: Any) -> str:
        value = claims.get(match.group(1))
        text = "" if value is None or isinstance(value, (dict, list)) else str(value)
        if match.group(2) == "lower":
            text = text.lower()
        elif match.group(2) == "localpart_from_email":
            text = text.rsplit("@", 1)[0]
        return text

    return TEMPLATE_PART.sub(part, template).strip()


def to_localpart(value: str) -> str | None:
    """A localpart from what the provider calls the user: lower-cased, any other
    character written as =xx per UTF-8 byte (Synapse's mapping); None when empty."""
    out = []
    for ch in value.lower():
        if ch in _LOCALPART_CHARS:
            out.append(ch)
        else:
            out.extend(f"={b:02x}" for b in ch.encode("utf-8"))
    localpart = "".join(out)
    if not localpart:
        return None
    try:
        check_new_localpart(localpart)
    except ValueError:
        return None
    return localpart
