"""The part of generate_config's template for what operators tune on a running server:
push, presence, retention, directory and profile rules, session lifetimes, caches,
invites and more (Synapse's keys, commented out with their defaults). Kept apart from
homeserver/config_template.py, which it is inserted into, to keep each module short.
"""

OPERATIONS = """# Push notifications to phones. include_content: false keeps what messages say away
# from the push gateway (and Apple's or Google's servers behind it, and notification
# mails); group_unread_count_by_room: false badges the app with messages, not rooms;
# jitter_delay sends each push at a random moment up to that long after the message;
# enabled: false runs no push rules at all (no pushes, no unread counts).
#push: {enabled: true, include_content: true, group_unread_count_by_room: true, jitter_delay: 0}

# Presence (online / away dots): false turns it off (nothing tracked, shown or sent:
# saves CPU and traffic on large servers); "untracked" shows only what users set.
#presence: {enabled: true}

# Deleting devices one after another asks for the password once: not again within
# this long of the last time (or of signing in). At most 1h; unset: always asks.
#ui_auth: {session_timeout: 15s}

# What a redacted (deleted) message said is erased from the database this long after
# its redaction (the time moderators have to review it); null keeps it forever.
#redaction_retention_period: 7d

# Rooms no sync shows, to anyone (a bot's busy room, a bridge's control room).
#exclude_rooms_from_sync: ["!abcdefgh:example.org"]

# The room directory. Rules are read in order and the first whose globs match decides
# (none matching denies). Who may create which aliases (unset: everyone), who may
# publish which rooms in the public room list (unset: only server admins, as Synapse;
# [{action: allow}] lets everyone; a room denied is created unpublished), whether the
# list can be searched at all, and whether an alias needs membership of its room.
#alias_creation_rules:
#  - {user_id: "*", alias: "#official-*", action: deny}
#  - {action: allow}
#room_list_publication_rules:
#  - {user_id: "@moderator:example.org", action: allow}
#  - {alias: "#public-*", action: allow}
#enable_room_list_search: true
#require_membership_for_aliases: true

# Profiles: avatars must be media held here, at most this big and of these types;
# allow_per_room_profiles: false gives every room the user's global name and avatar;
# include_profile_data_on_invite: false keeps the invitee's profile out of invites.
#max_avatar_size: 10M
#allowed_avatar_mimetypes: ["image/png", "image/jpeg", "image/gif"]
#allow_per_room_profiles: true
#include_profile_data_on_invite: true

# Devices nobody used for this long are signed out (their tokens, keys and pushers go).
#delete_stale_devices_after: 1y

# Rooms a user leaves (or is kicked, banned from) are forgotten for them at once.
#forget_rooms_on_leave: false
# A room every local user has forgotten is deleted this long after (unset: kept).
#forgotten_room_retention_period: 28d

# How long a login lasts: session_lifetime ends every token of a login (then sign in
# again); access tokens a client can refresh last refreshable_access_token_lifetime
# (5m), their refresh tokens refresh_token_lifetime, other access tokens
# nonrefreshable_access_token_lifetime. Unset: forever.
#session_lifetime: 90d
#refreshable_access_token_lifetime: 5m
#refresh_token_lifetime: 30d
#nonrefreshable_access_token_lifetime: 1d

# Cache sizes: global_factor scales every cache (below 1 on a small machine, above on a
# busy server), per_cache_factors one cache by name; event_cache_size the event cache.
#caches: {global_factor: 1.0, per_cache_factors: {get_users_in_room: 2.0}}
#event_cache_size: 10K

# Server-side message search (/search): false answers it 400 and indexes nothing.
#enable_search: true

# Where a browser opening this server's address is sent (a web client such as Element);
# unset: a page saying this is a Matrix homeserver.
#web_client_location: https://app.element.io/

# The state invitees and knockers see before joining (name, avatar, topic... by
# default): more types (a type: every state key; [type, state key]: one), or only those.
#room_prejoin_state:
#  disable_default_event_types: false
#  additional_event_types: ["org.example.custom.event.type", ["m.space.parent", "!abc:example.org"]]

# Invites of local users are accepted for them: the server joins the room on their
# behalf (retried a few times). only_for_direct_messages: invites marked is_direct
# only (the room is also added to the user's m.direct); only_from_local_users: invites
# sent by this server's users only. worker_to_run_on is read for Synapse's files; the
# main process accepts invites once for the whole deployment.
#auto_accept_invites:
#  enabled: false
#  only_for_direct_messages: false
#  only_from_local_users: false
#  worker_to_run_on: null

# Message retention policies (MSC1763): a room's m.room.retention state event, or else
# default_policy, says how long its messages live (max_lifetime). Older messages are
# no longer shown to clients, and purge jobs delete them (state events and each room's
# latest event stay). allowed_lifetime_min/max bound the lifetime a purge uses (rooms'
# values are brought within them). Each purge job handles the rooms whose max_lifetime
# is above shortest_max_lifetime and at most longest_max_lifetime; unset: one daily job
# for every room.
#retention:
#  enabled: false
#  default_policy: {min_lifetime: 1d, max_lifetime: 1y}
#  allowed_lifetime_min: 1d
#  allowed_lifetime_max: 1y
#  purge_jobs:
#    - {longest_max_lifetime: 3d, interval: 12h}
#    - {shortest_max_lifetime: 3d, interval: 1d}

# Signing in with a JSON Web Token a portal you trust issued (org.matrix.login.jwt):
# its subject claim is the user's localpart (the account is made on first sign-in).
#jwt_config:
#  enabled: true
#  secret: "<the HMAC secret, or the PEM public key for RS256/ES256>"
#  algorithm: HS256
#  subject_claim: sub
#  display_name_claim: name
#  issuer: https://portal.example.org
#  audiences: [matrix]

"""
