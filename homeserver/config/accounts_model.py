"""The accounts area's config sections (frozen dataclasses): mail and addresses,
registration checks, passwords, single sign-on, TURN, auto-joined rooms.

Split from model.py (the rest of the configuration) by responsibility; the readers
are email.py, registration_checks.py, oidc.py, voip.py and auto_join.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CaptchaConfig:
    """Synapse's reCAPTCHA keys: registration asks for a solved captcha."""

    public_key: str
    private_key: str
    siteverify_api: str = "https://www.recaptcha.net/recaptcha/api/siteverify"


@dataclass(frozen=True)
class ConsentConfig:
    """Synapse's `user_consent` (the registration part): the policy users accept."""

    version: str
    policy_file: Path  # <template_dir>/en/<version>.html, served at /_matrix/consent
    policy_name: str = "Privacy Policy"
    require_at_registration: bool = False


@dataclass(frozen=True)
class SmtpConfig:
    """How to reach the mail server (Synapse's key names and defaults)."""

    host: str = "localhost"
    port: int = 25
    user: str | None = None
    password: str | None = None
    # Implicit TLS from the first byte (port 465); else STARTTLS when offered...
    force_tls: bool = False
    enable_tls: bool = True
    # ... and refuse to send in the clear when the server does not offer it.
    require_transport_security: bool = False
    # One connection's whole conversation; a hung mail server fails the request.
    timeout_s: float = 30.0


@dataclass(frozen=True)
class EmailConfig:
    smtp: SmtpConfig
    notif_from: str  # the From header, e.g. "Matrix <noreply@example.org>"
    app_name: str = "Matrix"
    # How long a mailed link (and the session it validates) stays usable.
    validation_token_lifetime_ms: int = 60 * 60 * 1000
    # Mail users about notifications still unread notif_delay after they arrived
    # (Element's "email notifications" switch makes the email pusher).
    enable_notifs: bool = False
    # A user registering with an address gets that email pusher at once.
    notif_for_new_users: bool = True
    # Where the mailed room links open (Element Web's URL); matrix.to when unset.
    client_base_url: str | None = None
    # Ours (Synapse waits 10 minutes, fixed): how long a notification stays unread
    # before it is mailed, and the least time between two mails to one user.
    notif_delay_ms: int = 10 * 60 * 1000


@dataclass(frozen=True)
class LocalThreepidPattern:
    medium: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class ThreepidConfig:
    """What users may do with email addresses on this server."""

    email: EmailConfig | None = None
    # Users may add and remove addresses (capability m.3pid_changes).
    changes_enabled: bool = True
    # Answer requestToken as if it worked when the address is in use or unknown (no
    # account enumeration), at the cost of a less helpful error for honest users.
    inhibit_errors: bool = False
    # Hosts a validated link may send the browser on to; None: any https/http host.
    next_link_hosts: frozenset[str] | None = None
    # Only addresses matching one of these may be added or registered; () allows any.
    allowed_local: tuple[LocalThreepidPattern, ...] = ()


@dataclass(frozen=True)
class PasswordPolicy:
    """Synapse's password_config.policy: what a new password must have."""

    minimum_length: int = 0
    require_digit: bool = False
    require_symbol: bool = False
    require_lowercase: bool = False
    require_uppercase: bool = False


@dataclass(frozen=True)
class PasswordConfig:
    """Synapse's password_config: `enabled: false` for servers whose users sign in
    only through an identity provider."""

    enabled: bool = True
    policy: PasswordPolicy = PasswordPolicy()


@dataclass(frozen=True)
class AutoJoinConfig:
    """Synapse's auto_join_* keys: rooms every new user joins (a community's #welcome)."""

    rooms: tuple[str, ...] = ()  # aliases or room IDs
    autocreate: bool = True  # a local alias nobody made yet: create the room
    federated: bool = True  # m.federate of rooms we create
    preset: str = "public_chat"
    # Who creates them (and invites, for a private preset); else the first new user.
    creator_localpart: str | None = None
    for_guests: bool = True


@dataclass(frozen=True)
class TurnConfig:
    """Synapse's turn_* keys: the TURN server (coturn) clients relay calls through."""

    uris: tuple[str, ...] = ()
    # coturn's use-auth-secret: we hand out time-limited credentials signed with it...
    shared_secret: str | None = None
    # ... or fixed ones.
    username: str | None = None
    password: str | None = None
    user_lifetime_ms: int = 3_600_000
    allow_guests: bool = True


@dataclass(frozen=True)
class OidcProviderConfig:
    """One of Synapse's `oidc_providers`: an OpenID Connect identity provider users
    sign in with (authorization code flow, PKCE)."""

    idp_id: str  # "oidc-<id>" as clients see it
    idp_name: str
    issuer: str
    client_id: str
    client_secret: str | None = None
    client_auth_method: str = "client_secret_basic"  # or client_secret_post, none
    scopes: tuple[str, ...] = ("openid",)
    discover: bool = True
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    jwks_uri: str | None = None
    skip_verification: bool = False  # allow http:// (tests, a local IdP)
    user_profile_method: str = "auto"  # or userinfo_endpoint
    allow_existing_users: bool = False
    enable_registration: bool = True
    pkce_method: str = "auto"
    idp_icon: str | None = None
    idp_brand: str | None = None
    subject_claim: str = "sub"
    localpart_template: str = "{{ user.preferred_username }}"
    display_name_template: str | None = None
    email_template: str | None = None
    # (claim, required value or None for "present"), all must hold.
    attribute_requirements: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class SsoConfig:
    providers: tuple[OidcProviderConfig, ...] = ()
    # Client URLs (prefixes) trusted with a login token without asking the user.
    client_whitelist: tuple[str, ...] = ()
    # Update display name and email from the provider at each login.
    update_profile_information: bool = False
