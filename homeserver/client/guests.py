"""What a guest account may call (the spec's Guest Access module, widened as Synapse
widens it).

Guests have no password and exist to read and talk in rooms whose `m.room.guest_access`
is `can_join`. Rather than flag each of the hundred authenticated handlers, the list
lives here, in one table an auditor can read: `get_requester` refuses every other
route with 403 M_GUEST_ACCESS_FORBIDDEN. Paths are matched after
`/_matrix/client/<version>` so every version prefix is covered at once.
"""

from __future__ import annotations

import re

_ROOM = r"/rooms/[^/]+"

# (methods, path pattern after the version segment)
_ALLOWED: tuple[tuple[frozenset[str], str], ...] = (
    # Reading rooms and syncing.
    (frozenset({"GET"}), r"/sync"),
    (frozenset({"POST"}), r"/org\.matrix\.simplified_msc3575/sync"),
    (frozenset({"GET"}), r"/events"),  # with room_id only (checked by the handler)
    (frozenset({"GET"}), _ROOM + r"/(state|members|joined_members|messages|initialSync)"),
    (frozenset({"GET"}), _ROOM + r"/(state/.+|event/[^/]+|context/[^/]+|relations/.+)"),
    (frozenset({"GET"}), _ROOM + r"/(hierarchy|summary)"),
    (frozenset({"GET"}), r"/room_summary/[^/]+|/im\.nheko\.summary/summary/[^/]+"),
    (frozenset({"GET"}), r"/joined_rooms"),
    (frozenset({"GET", "POST"}), r"/publicRooms"),
    (frozenset({"GET"}), r"/thirdparty/.+"),
    (frozenset({"GET"}), r"/media/(download|thumbnail|config|preview_url)(/.*)?"),
    (frozenset({"GET"}), r"/profile/[^/]+(/[^/]+)?"),
    # Talking: join and leave (rooms that allow guests), send, state, to-device.
    (frozenset({"POST", "PUT"}), _ROOM + r"/(join|leave)(/[^/]+)?"),
    (frozenset({"POST", "PUT"}), r"/join/[^/]+(/[^/]+)?"),
    (frozenset({"POST", "PUT"}), _ROOM + r"/send/[^/]+(/[^/]+)?"),
    (frozenset({"PUT"}), _ROOM + r"/state/.+"),
    (frozenset({"PUT"}), r"/sendToDevice/[^/]+/[^/]+"),
    # Their own account: display name (only), devices, whoami, filters, logout.
    (frozenset({"PUT", "DELETE"}), r"/profile/[^/]+/displayname"),
    (frozenset({"GET"}), r"/devices(/[^/]+)?"),
    (frozenset({"PUT"}), r"/devices/[^/]+"),
    (frozenset({"GET"}), r"/account/whoami|/capabilities|/versions"),
    (frozenset({"GET", "POST"}), r"/user/[^/]+/filter(/[^/]+)?"),
    (frozenset({"POST"}), r"/logout"),
    # End-to-end encryption.
    (frozenset({"POST"}), r"/keys/(upload|query|claim|signatures/upload)"),
    (frozenset({"GET"}), r"/keys/changes"),
)

_COMPILED = tuple((methods, re.compile(pattern)) for methods, pattern in _ALLOWED)
_CLIENT_PREFIX = re.compile(r"^/_matrix/client/[^/]+")


def guest_may_call(method: str, path: str) -> bool:
    """Whether a guest may make this client API request."""
    match = _CLIENT_PREFIX.match(path)
    if match is None:
        return False
    rest = path[match.end() :]
    return any(method in methods and p.fullmatch(rest) for methods, p in _COMPILED)
