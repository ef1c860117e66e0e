"""The commented config that `generate-config` prints (and config.example.yaml is made of).

Kept apart from config.py so the parser stays readable; a unit test loads the output
back and checks that every known key is mentioned, so the two cannot drift apart.
"""

from __future__ import annotations

import json

from homeserver.config import DEFAULT_IP_RANGE_BLACKLIST
from homeserver.config_template_operations import OPERATIONS
from homeserver.ids import split_server_name


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def generate_config(
    server_name: str,
    data_dir: str = "data",
    *,
    open_registration: bool = False,
    port: int = 8008,
) -> str:
    """A complete, commented homeserver.yaml with safe defaults.

    `open_registration` is for the local quick-start only: it lets anyone who can reach
    the (loopback-only) listener create an account without any verification.
    """
    split_server_name(server_name)  # raises ValueError for a bad name
    data = data_dir.rstrip("/") or "."
    if open_registration:
        registration = """\
# Quick-start setting: anyone who can reach the listener may create an account without
# email, captcha or token. Safe here ONLY because the listener above binds 127.0.0.1, so
# just local clients can register. Turn it off before listening on a public address.
enable_registration: true
enable_registration_without_verification: true"""
    else:
        registration = """\
# Let anyone create an account with /register. Off by default; Synapse (and we) also
# demand enable_registration_without_verification: true or registration_requires_token:
# true before open registration is accepted.
enable_registration: false
enable_registration_without_verification: false"""
    blacklist = "\n".join(f"  - {_q(net)}" for net in DEFAULT_IP_RANGE_BLACKLIST)
    return f"""\
# Homeserver configuration (Synapse-compatible key names).
# Relative paths are resolved against the folder containing THIS file.
# An empty value means "use the default".

# The domain part of your users' IDs (@alice:{server_name}). Cannot change later.
server_name: {_q(server_name)}

# The URL clients use to reach this server; advertised at /.well-known/matrix/client.
#public_baseurl: "https://matrix.example.com/"

# Where we listen. Each listener serves the resources it names:
# client (/_matrix/client, /_synapse/admin, /.well-known), federation
# (/_matrix/federation and /_matrix/key), keys (/_matrix/key only), media
# (/_matrix/media), metrics (/_synapse/metrics, with enable_metrics: true).
listeners:
  - port: {port}
    # Loopback only: put a TLS reverse proxy in front, or list public addresses.
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    # Trust X-Forwarded-For from the reverse proxy.
    x_forwarded: false
    resources:
      - names: [client, federation]

# SQLite: one process, nothing to install. For PostgreSQL (and workers) use
#   name: psycopg2
#   args: {{dsn: "postgresql://user:password@host/dbname"}}
# (README "PostgreSQL").
database:
  name: sqlite3
  args:
    database: {_q(data + "/homeserver.db")}

# Our ed25519 signing key, Synapse's file format; created on first start if absent.
signing_key_path: {_q(data + "/" + server_name + ".signing.key")}

# Keys we used to sign with, still published so old signatures verify:
#old_signing_keys:
#  "ed25519:auto": {{key: "<unpadded base64 public key>", expired_ts: 1700000000000}}
old_signing_keys: {{}}

# How long others may cache our key document (valid_until_ts = now + this).
key_refresh_interval: "1d"

# Notary servers we may ask for other servers' keys. Unlike Synapse (which defaults
# to matrix.org) we trust none unless you list them here.
#trusted_key_servers:
#  - server_name: "matrix.org"
#    verify_keys: {{"ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}}
trusted_key_servers: []
suppress_key_server_warning: false

# TLS for listeners with tls: true (PEM files).
#tls_certificate_path: "/etc/ssl/matrix/fullchain.pem"
#tls_private_key_path: "/etc/ssl/matrix/privkey.pem"

{registration}
# Names starting with _ are kept for bridges unless allowed; inhibit_user_in_use_error
# hides whether a name is taken until registration completes (no probing for accounts).
#allow_underscore_prefixed_registration: false
#inhibit_user_in_use_error: false
# The type new accounts get (bot, support or one of extra_user_types) and the types
# beyond bot and support the admin API may give users.
#user_types: {{default_user_type: null, extra_user_types: []}}
registration_requires_token: false

# Guest accounts (POST /register?kind=guest): no password, only rooms whose
# m.room.guest_access is can_join; a guest may upgrade to a full account.
allow_guest_access: false

# Passwords: a policy for new ones (registration, change, reset; GET /password_policy
# tells clients), or enabled: false when users sign in only through single sign-on.
#password_config:
#  enabled: true
#  policy: {{enabled: true, minimum_length: 10, require_digit: true, require_symbol: false,
#           require_lowercase: true, require_uppercase: false}}

# New rooms start end-to-end encrypted: all, invite (the private presets) or off.
#encryption_enabled_by_default_for_room_type: "off"
# Only server admins may invite (a closed community's server).
#block_non_admin_invites: false
# Power levels of new rooms per preset (under what the request itself overrides).
#default_power_level_content_override:
#  private_chat: {{invite: 50}}

# Users may change their display name and avatar (off where a directory owns them).
#enable_set_displayname: true
#enable_set_avatar_url: true

# Who may read profiles: anyone (default), users with an access token, or only users
# sharing a room with the profile's owner.
#require_auth_for_profile_requests: false
#limit_profile_requests_to_users_who_share_rooms: false

# The user directory (/user_directory/search): who can be found. By default the users
# you share a room with and members of public rooms; search_all_users: every local user.
#user_directory: {{enabled: true, search_all_users: false}}

# Rooms every new user joins (a local alias nobody made yet is created at first use).
#auto_join_rooms: ["#welcome:example.org"]
#autocreate_auto_join_rooms: true
#autocreate_auto_join_rooms_federated: true
#autocreate_auto_join_room_preset: public_chat   # private ones need the next key
#auto_join_mxid_localpart: system   # who creates them (and invites); else the first user
#auto_join_rooms_for_guests: true

# TURN server (coturn) for 1:1 calls: clients get credentials from /voip/turnServer.
# With coturn's use-auth-secret, give its static-auth-secret here (or a file);
# otherwise fixed turn_username / turn_password.
#turn_uris: ["turn:turn.example.org?transport=udp", "turn:turn.example.org?transport=tcp"]
#turn_shared_secret: "..."
#turn_shared_secret_path: /etc/matrix/turn_secret
#turn_username: "..."
#turn_password: "..."
#turn_user_lifetime: 1h
#turn_allow_guests: true

{OPERATIONS}# Single sign-on with OpenID Connect providers (Element shows a button for each; needs
# public_baseurl and `pip install 'homeserver[oidc]'`). The provider sends users back to
# <public_baseurl>_synapse/client/oidc/callback.
#oidc_providers:
#  - idp_id: company
#    idp_name: "Company SSO"
#    issuer: "https://login.example.org/"
#    client_id: "matrix"
#    client_secret: "..."
#    scopes: ["openid", "profile", "email"]
#    allow_existing_users: false   # link to an existing account of the same username
#    user_mapping_provider:
#      config:
#        localpart_template: "{{{{ user.preferred_username }}}}"
#        display_name_template: "{{{{ user.name }}}}"
#        email_template: "{{{{ user.email }}}}"
# Apps (URL prefixes) that get the login token without the user confirming.
#sso:
#  client_whitelist: ["https://app.element.io/"]

# Registration with a reCAPTCHA (Element shows it): your site's keys, inline or in files.
#enable_registration_captcha: true
#recaptcha_public_key: "..."
#recaptcha_private_key: "..."
#recaptcha_public_key_path: /etc/matrix/recaptcha_public_key
#recaptcha_private_key_path: /etc/matrix/recaptcha_private_key
#recaptcha_siteverify_api: https://www.recaptcha.net/recaptcha/api/siteverify
# A policy users accept when they register (m.login.terms): <template_dir>/en/<version>.html,
# served at /_matrix/consent; the admin API shows who accepted which version.
#user_consent:
#  template_dir: privacy_policy_templates
#  version: "1.0"
#  policy_name: Privacy Policy
#  require_at_registration: true

# Mail (validating email addresses users add, "forgot password" and registering with
# an address): your SMTP server. Without this section nothing is mailed and those
# requests are refused. The links point at public_baseurl, which must be set.
#email:
#  smtp_host: mail.example.org
#  smtp_port: 587
#  smtp_user: matrix
#  smtp_pass: secret
#  require_transport_security: true   # STARTTLS or fail (force_tls: true for port 465)
#  notif_from: "Matrix <noreply@example.org>"
#  app_name: Matrix
#  validation_token_lifetime: 1h
#  # Mail users about messages left unread for notif_delay (Element's "email
#  # notifications" switch; on at registration with an address unless
#  # notif_for_new_users: false). Room links open client_base_url.
#  enable_notifs: true
#  notif_for_new_users: true
#  client_base_url: https://app.element.io
#  notif_delay: 10m
# Users may add and remove addresses (Synapse's default).
#enable_3pid_changes: true
# Registration needs a validated address (with registration open).
#registrations_require_3pid: [email]
# Only addresses matching one of these may be added or registered with.
#allowed_local_3pids:
#  - {{medium: email, pattern: '^[^@]+@example\\.org$'}}
# Where a confirmed link may send the browser (any http(s) host when unset).
#next_link_domain_whitelist: ["app.element.io"]
# Answer requestToken alike whether or not an address has an account (no account
# enumeration, at the cost of less helpful errors).
#request_token_inhibit_3pid_errors: false

# argon2id cost for password hashes (libsodium units; defaults: OWASP m=7 MiB, t=5).
#password_hashing: {{opslimit: 5, memlimit: 7340032}}

# Secret for the admin API POST /_synapse/admin/v1/register (used by
# `python -m homeserver register-user`). If neither this nor
# registration_shared_secret_path is set, one is generated on first start and kept in
# <database name>.secrets.yaml next to the database, together with
# macaroon_secret_key and form_secret. `registration_shared_secret: null` turns that
# API off (no secret is generated).
#registration_shared_secret: "<long random string>"
#registration_shared_secret_path: "/run/secrets/registration_shared_secret"
#macaroon_secret_key: "<long random string>"
#macaroon_secret_key_path: "/run/secrets/macaroon_secret_key"
#form_secret: "<long random string>"
#form_secret_path: "/run/secrets/form_secret"

# Outbound federation.
federation_verify_certificates: true
# Extra CA certificates (PEM files) to trust for federation requests.
federation_custom_ca_list: []
# The oldest TLS version spoken to other servers ("1.2", "1.3"; unset: the system's).
#federation_client_minimum_tls_version: "1.2"
# Servers whose certificates are not checked (globs; a closed federation only).
#federation_certificate_verification_whitelist: ["*.internal.example.org"]
# Never contact these addresses (protects your private network from crafted server
# names). ip_range_whitelist punches holes in it.
ip_range_blacklist:
{blacklist}
ip_range_whitelist: []
# Federate only with these servers; leave unset to federate with everyone.
#federation_domain_whitelist: ["example.com"]
allow_public_rooms_over_federation: false
# Other servers' users see our users' device names ("Alice's work laptop") only when
# this is on; profiles (name, avatar) can be withheld from other servers.
allow_device_name_lookup_over_federation: false
allow_profile_lookup_over_federation: true
# Let clients without an access token read our room directory (/publicRooms).
allow_public_rooms_without_auth: false
# Tests only: talk to other servers over plain http:// (no TLS). Never enable in production.
#federation_client_plain_http_for_tests: false
# Backing off from a server that stops answering: its queued events are retried first
# after destination_min_retry_interval, then each time destination_retry_multiplier
# times later, at most destination_max_retry_interval apart (a server that answers
# again is sent to at once: it is noticed when it contacts us). client_timeout bounds
# each outbound transaction. Synapse's max_short/long_retr* keys are accepted and unused.
federation:
  destination_min_retry_interval: 10s
  destination_retry_multiplier: 2
  destination_max_retry_interval: 1h
  client_timeout: 60s

# Refuse local users' joins of remote rooms bigger than this server wants to hold (a
# room's whole state is fetched, stored and resolved at the join). The room's servers
# are asked for its complexity (state events / 500; 1.0 = 500 state events) first;
# if none answers, the join goes ahead and the user leaves again when the state turns
# out bigger. admins_can_join: server admins are not limited.
#limit_remote_rooms:
#  enabled: false
#  complexity: 1.0
#  complexity_error: "This homeserver cannot join rooms this large or complex."
#  admins_can_join: false

# Resource limits (Synapse's). limit_usage_by_mau caps the monthly active users (a user
# counts once active in the last 30 days) at max_mau_value: past it, newcomers cannot
# register, log in, sync, create or join rooms or send (403 M_RESOURCE_LIMIT_EXCEEDED,
# naming admin_contact); users already counted carry on. mau_stats_only counts them for
# the synapse_admin_mau_* metrics without refusing anyone. mau_trial_days: new accounts
# count only after this many days (mau_appservice_trial_days: per appservice ID).
# mau_limit_reserved_threepids: accounts (by email) that always hold a seat.
# mau_limit_alerting: false sends no "limit reached" server notice (server_notices).
# hs_disabled refuses every user with hs_disabled_message.
#limit_usage_by_mau: false
#max_mau_value: 0
#mau_stats_only: false
#mau_trial_days: 0
#mau_appservice_trial_days: {{my_appservice_id: 3}}
#mau_limit_alerting: true
#mau_limit_reserved_threepids:
#  - {{medium: email, address: reserved_user@example.com}}
#hs_disabled: false
#hs_disabled_message: "Homeserver is currently blocked"
#admin_contact: "mailto:admin@example.com"

# Rate limits: per_second (refill rate; null = unlimited) and burst_count.
# rc_enabled: false switches every limit off (tests, private servers).
rc_enabled: true
rc_message: {{per_second: 0.2, burst_count: 10}}
rc_registration: {{per_second: 0.17, burst_count: 3}}
rc_registration_token_validity: {{per_second: 0.1, burst_count: 5}}
rc_login:
  address: {{per_second: 0.003, burst_count: 5}}
  account: {{per_second: 0.003, burst_count: 5}}
  failed_attempts: {{per_second: 0.17, burst_count: 3}}
rc_joins:
  local: {{per_second: 0.1, burst_count: 10}}
  remote: {{per_second: 0.01, burst_count: 10}}
rc_joins_per_room: {{per_second: 1, burst_count: 10}}
rc_invites:
  per_room: {{per_second: 0.3, burst_count: 10}}
  per_user: {{per_second: 0.003, burst_count: 5}}
  per_issuer: {{per_second: 0.3, burst_count: 10}}
rc_third_party_invite: {{per_second: 0.2, burst_count: 10}}
rc_media_create: {{per_second: 10, burst_count: 50}}
# Rooms a user creates, presence changes they make, content reports they file.
rc_room_creation: {{per_second: 0.016, burst_count: 10}}
rc_presence:
  per_user: {{per_second: 0.1, burst_count: 1}}
rc_reports: {{per_second: 0.1, burst_count: 5}}
# Requests from each other server: at most `concurrent` at once, past `reject_limit`
# waiting refused (429), past `sleep_limit` in `window_size` ms each delayed `sleep_delay` ms.
rc_federation: {{window_size: 1000, sleep_limit: 10, sleep_delay: 500, reject_limit: 50, concurrent: 3}}
# Managing a delayed event (restart, cancel, send; per owner, per address for unknown IDs):
rc_delayed_event_mgmt: {{per_second: 1, burst_count: 5}}
# Mails sent by requestToken, per client address and per email address.
rc_3pid_validation: {{per_second: 0.003, burst_count: 5}}
# Redactions by server admins are unlimited unless set:
#rc_admin_redaction: {{per_second: 1, burst_count: 50}}

# Room version for new rooms.
default_room_version: "12"

# Uploaded media (the content repository).
media_store_path: {_q(data + "/media_store")}
#enable_media_repo: true
max_upload_size: "50M"
# How much one user may upload per period (none by default):
#media_upload_limits:
#  - {{time_period: "1h", max_size: "500M"}}
#  - {{time_period: "1d", max_size: "2G"}}
# Images larger than this many pixels are not decoded (decompression bombs).
max_image_pixels: "32M"
# Thumbnails made at upload; requests get the closest stored size at least as large.
#thumbnail_sizes:
#  - {{width: 32, height: 32, method: crop}}
#  - {{width: 96, height: 96, method: crop}}
#  - {{width: 320, height: 240, method: scale}}
#  - {{width: 640, height: 480, method: scale}}
#  - {{width: 800, height: 600, method: scale}}
# Make a thumbnail of exactly the requested size on demand.
dynamic_thumbnails: false
# Media uploaded while this is true is only served to signed-in users (spec v1.11);
# the legacy unauthenticated /_matrix/media/v3/download answers 404 for it.
enable_authenticated_media: true
# Asynchronous uploads (POST /_matrix/media/v1/create): IDs a user may hold unused,
# and how long an unused ID lives.
max_pending_media_uploads: 5
unused_expiration_time: "24h"
# Delete media nobody downloaded for this long (left out: keep forever).
#media_retention:
#  local_media_lifetime: "90d"
#  remote_media_lifetime: "14d"
# URL previews fetch pages that users post: off unless you list the address ranges
# (at least your private networks) that a preview must never reach.
url_preview_enabled: false
#url_preview_ip_range_blacklist: ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12",
#  "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "::1/128", "fe80::/10", "fc00::/7"]
#url_preview_ip_range_whitelist: []
# Refuse URLs matching every component of one entry (glob, or regex starting with ^):
#url_preview_url_blacklist:
#  - {{netloc: "*.internal.example.com"}}
# Largest page or image a preview downloads.
max_spider_size: "10M"
# The languages previews ask pages for (Accept-Language).
#url_preview_accept_language: ["en-GB", "en;q=0.9", "*;q=0.5"]
# Servers whose media is never downloaded (abuse); what is already held is still served.
#prevent_media_downloads_from: ["evil.example.com"]
# Bytes of other servers' media one client address may have us download (a leaky
# bucket: this many a second, this many at once); past it 429 until it drains.
#remote_media_download_per_second: 87K
#remote_media_download_burst_count: 500M

# Application services (bridges, bots): their registration files.
#app_service_config_files: ["/etc/matrix/bridge-registration.yaml"]

# Delayed events (MSC4140; Element Call uses them to end a crashed client's call
# membership): the longest delay a user may ask for. 0 switches them off.
max_event_delay_duration: 1d

# Largest JSON request body we accept (uploads use max_upload_size).
max_request_body: "10M"

# Serve /.well-known/matrix/server pointing peers at <server_name>:443.
serve_server_wellknown: false
# Base URL /.well-known/matrix/client advertises (defaults to public_baseurl).
#well_known_client: "https://matrix.example.com/"
# More keys for /.well-known/matrix/client (ours are never replaced): Element Call
# finds its LiveKit token service (lk-jwt-service) here...
#extra_well_known_client_content:
# The identity server clients are told of (m.identity_server in that document).
#default_identity_server: https://vector.im
#  org.matrix.msc4143.rtc_foci:
#    - type: livekit
#      livekit_service_url: "https://livekit-jwt.example.com"
# ...or here: GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports (MSC4143).
#matrix_rtc:
#  transports:
#    - type: livekit
#      livekit_service_url: "https://livekit-jwt.example.com"
# What /.well-known/matrix/support tells users (404 when left out): admin contacts
# (role m.role.admin or m.role.security, with a matrix_id and/or an email_address)
# and/or a support page.
#support:
#  contacts:
#    - {{role: m.role.admin, matrix_id: "@admin:example.org", email_address: "admin@example.org"}}
#  support_page: "https://example.org/support.html"

# DEBUG, INFO, WARNING, ERROR or CRITICAL. Logs go to stderr: one INFO line per request
# ("Processed request", logger homeserver.access), SQL tracing only when the
# homeserver.storage.sql logger is set to DEBUG.
log_level: "INFO"
# Or a Python logging dictConfig YAML file, as Synapse reads it (wins over log_level):
#log_config: "log_config.yaml"

# Prometheus metrics at /_synapse/metrics on listeners with the `metrics` resource,
# or on a Synapse-style listener of its own:
#   - {{port: 9000, type: metrics, bind_addresses: ["127.0.0.1"]}}
enable_metrics: false

# The cyclic garbage collector's thresholds (Python's gc.set_threshold; Synapse's key).
# The default keeps the objects of requests in flight out of repeated collections;
# Python's own is [700, 10, 10].
#gc_thresholds: [50000, 20, 20]

# Server notices (POST /_synapse/admin/v1/send_server_notice): sent by this local user
# in a room per user that only it may speak in. Off unless this section is present.
#server_notices:
#  system_mxid_localpart: notices
#  system_mxid_display_name: "Server Notices"
#  system_mxid_avatar_url: "mxc://example.com/abcdef"
#  room_name: "Server Notices"
#  room_topic: "Messages from the server admins"
#  auto_join: true

# Workers (PostgreSQL and Redis only; README "Workers"): this shared file names the
# bus and where the main process listens for its workers; each worker adds a file of
# its own with worker_app, worker_name and worker_listeners, and starts with
# `python -m homeserver run -c homeserver.yaml -c worker1.yaml`.
#redis:
#  enabled: true
#  host: 127.0.0.1
#  port: 6379
#instance_map:
#  main: {{host: 127.0.0.1, port: 9093}}   # the main's listener with resources [replication]
#worker_replication_secret: "a long random string"
#worker_replication_secret_path: "/etc/homeserver/replication.secret"
# Workers that deliver outbound federation (destinations shared by hash; the main
# then delivers none):
#federation_sender_instances: [federation_sender1, federation_sender2]
# Workers that send push notifications (users shared by hash; the main then sends none):
#pusher_instances: [pusher1]
# The worker that sends transactions to appservices (the main then sends none):
#notify_appservices_from_worker: appservice1
# The media worker that expires unused upload reservations and applies media_retention
# (the main when unset; every process writes its own reads' access times behind):
#media_instance_running_background_jobs: media_repository1
# Event persisters: each room's writes go to one of them (by a hash of the room ID);
# each needs an instance_map entry (its replication listener):
# Client readers that write account data and tags, to-device messages, read receipts,
# push rules, devices (key uploads and claims, logins, logouts, registrations,
# pushers), typing and presence themselves (the others hand
# them to the main; read markers and push rules need a reader that writes account_data
# too). A writer of to_device, receipts, device_lists, typing or presence also writes what other
# servers send for them: it needs an instance_map entry and a replication listener
# (instance_map: {{client_reader1: {{host: 127.0.0.1, port: 9111}}, ...}}):
#stream_writers:
#  events: [event_persister1, event_persister2]
#  account_data: [client_reader1, client_reader2]
#  to_device: [client_reader1, client_reader2]
#  receipts: [client_reader1, client_reader2]
#  push_rules: [client_reader1, client_reader2]
#  device_lists: [client_reader1, client_reader2]
#  typing: [client_reader1, client_reader2]
#  presence: [client_reader1]  # one writer (its timers): the main when none is named
#worker_app: generic_worker
#worker_name: client_reader1
#worker_listeners:
#  - {{port: 8101, bind_addresses: ["127.0.0.1"], resources: [{{names: [client]}}]}}
#  - {{port: 9111, bind_addresses: ["127.0.0.1"], resources: [{{names: [replication]}}]}}
"""
