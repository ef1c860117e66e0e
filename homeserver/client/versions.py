"""GET /_matrix/client/versions: the spec versions we implement (no auth required).

Clients pick features from this answer, so it lists only what is really served:
- versions: v1.1 up to v1.19. v1.13/v1.14 added the room and user report endpoints,
  v1.15 `/room_summary` (v1.15's OAuth 2.0 API is optional: our 404 on `/auth_metadata`
  tells clients to use the classic login). v1.16: sync `use_state_after`/`state_after`,
  extended profile fields (`m.profile_fields`), `format=event` on GET state, room v12
  with `additional_creators` on /upgrade and trusted_private_chat, the create event in
  invite/knock stripped state. Checked item by item against the changelogs:
  v1.17: appservice device masquerading and management (MSC4326, MSC4190); `m.oauth`
  UIA concerns OAuth servers only; `room_id` required for `/events` peeking; one-time
  key counts always sent. The legacy body-matching push rules (MSC4210) are still
  served as extra server-default rules (the spec allows server-defined ones; Element's
  settings read them) and never apply to events that carry `m.mentions`.
  v1.18: `/_matrix/client/v1/admin/suspend|lock` with the `m.account_moderation`
  capability, redactions through `PUT /send/m.room.redaction` (MSC4169), invite
  permission (`m.invite_permission_config`, M_INVITE_BLOCKED), Policy Servers (we ask
  the room's, and soft fail events it did not sign), `m.forget_forced_upon_leave`
  advertised as off, report `score` ignored; the OAuth 2.0 additions are optional.
  v1.19: `/mutual_rooms`, `unsigned.replaces_state`, case-insensitive server ACLs;
  image packs, `m.key_backup` account data and history sharing are client-side.
- unstable_features: each flag is a promise about behaviour. `false` tells clients
  (Element checks these) not to try a feature; a flag missing means the same.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.appstate import CONFIG, Mounts
from homeserver.http import json_response

SUPPORTED_VERSIONS = tuple(f"v1.{minor}" for minor in range(1, 20))

UNSTABLE_FEATURES: dict[str, bool] = {
    # Cross-signing keys upload/query (stable since r0.6.1; older Element checked this).
    "org.matrix.e2e_cross_signing": True,
    # Private read receipts (m.read.private), stable in v1.4.
    "org.matrix.msc2285.stable": True,
    # Threads (m.thread relations, /threads), stable in v1.4.
    "org.matrix.msc3440.stable": True,
    # Extended profiles on the stable /profile/{userId}/{keyName} paths.
    "uk.tcpip.msc4133.stable": True,
    # Logging in a new device with a QR code (MSC3882's unstable endpoints): not built.
    "org.matrix.msc3882": False,
    # Event filtering by labels (MSC2326): not built.
    "org.matrix.label_based_filtering": False,
    # Mutual rooms (MSC2666) on its last unstable path, as matrix-js-sdk asks for them.
    "uk.half-shot.msc2666.query_mutual_rooms": True,
    # Filtering /publicRooms by room type (MSC3827, stable in v1.4): Element's search
    # looks for this flag before it offers public spaces.
    "org.matrix.msc3827.stable": True,
    # Remote push toggling (MSC3881): pushers can be switched off (client/pushers.py).
    "org.matrix.msc3881": True,
    # Dehydrated devices (MSC3814; homeserver/e2ee/dehydration.py).
    "org.matrix.msc3814": True,
    # Delayed events (MSC4140; homeserver/delayed): Element Call's "left the call" timer.
    "org.matrix.msc4140": True,
    # Simplified sliding sync (MSC4186): matrix-rust-sdk (Element X) needs it.
    "org.matrix.simplified_msc3575": True,
}


async def get_versions(request: web.Request) -> web.Response:
    features = dict(UNSTABLE_FEATURES)
    if request.config_dict[CONFIG].max_event_delay_ms is None:  # switched off here
        features["org.matrix.msc4140"] = False
    return json_response({"versions": list(SUPPORTED_VERSIONS), "unstable_features": features})


def setup(mounts: Mounts) -> None:
    mounts.client.router.add_get("/versions", get_versions)
