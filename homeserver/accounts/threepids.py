"""Email addresses held by this server: validating them by mail, and what a validated
address is for (added to an account, registering with it, resetting a password).

The flow (client-server API "Adding Account Administrative Contact Information"):
requestToken stores a validation session and mails a link carrying its token; the
user opens the link and confirms on our page (a GET only shows the page, so a mail
scanner fetching every link validates nothing); the client, which alone knows the
session's `client_secret`, then uses the session once for the purpose it was mailed
for. A session validated to add an address cannot reset a password: the mail the user
confirmed said what it was for.
"""

from __future__ import annotations

import re
import secrets
import time
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from homeserver.accounts.mailer import Mail, Mailer, MailError
from homeserver.accounts.uia import StageContext, StageFailed
from homeserver.config.accounts_model import ThreepidConfig
from homeserver.errors import MatrixError
from homeserver.storage.threepids import ThreepidStore, UserThreepid, ValidationSession

ADD = "add"
REGISTRATION = "registration"
PASSWORD_RESET = "password_reset"
PURPOSES = (ADD, REGISTRATION, PASSWORD_RESET)
# The mailed link's path segment per purpose (Synapse's names for the first two).
LINK_SEGMENTS = {
    ADD: "add_threepid",
    REGISTRATION: "registration",
    PASSWORD_RESET: "password_reset",
}

MAX_EMAIL_LENGTH = 254  # RFC 5321's path limit, less the brackets
MAX_NEXT_LINK_LENGTH = 2048
MAX_SEND_ATTEMPT = 2**53
_CLIENT_SECRET = re.compile(r"[0-9a-zA-Z.=_\-]{1,255}")

_SUBJECTS = {
    ADD: "[%s] Validate your email",
    REGISTRATION: "[%s] Validate your email",
    PASSWORD_RESET: "[%s] Password reset",
}
_BODIES = {
    ADD: "You asked to add this email address to your {app} account on {server}.",
    REGISTRATION: "You asked to register a {app} account on {server} with this email address.",
    PASSWORD_RESET: "You asked to reset the password of your {app} account on {server}.",
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def invalid_param(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


# RFC 5322 specials (and DEL): an address with one could name more than one mailbox
# in a header ("a,b@evil.example"); the quoted local parts that allow them are not
# worth that.
_SPECIALS = frozenset('()<>[]:;\\,"\x7f')


def canonical_email(address: str) -> str:
    """The form we store and compare: trimmed, local part case-folded, domain lower-cased
    (as Synapse; two spellings of one mailbox are one address)."""
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in local
        or len(address) > MAX_EMAIL_LENGTH
        or any(c.isspace() or ord(c) < 0x20 or c in _SPECIALS for c in address)
    ):
        raise invalid_param("Unable to parse email address")
    return f"{local.casefold()}@{domain.lower()}"


def check_client_secret(value: str) -> str:
    if not _CLIENT_SECRET.fullmatch(value):
        raise invalid_param("Invalid client_secret parameter")
    return value


def auth_failed(message: str = "No validated 3pid session found") -> MatrixError:
    return MatrixError(400, "M_THREEPID_AUTH_FAILED", message)


class ThreepidService:
    def __init__(
        self,
        config: ThreepidConfig,
        server_name: str,
        public_baseurl: str | None,
        store: ThreepidStore,
        mailer: Mailer | None,
    ) -> None:
        self._config = config
        self._server_name = server_name
        self._base_url = public_baseurl or ""
        self._store = store
        self._mailer = mailer

    @property
    def email_enabled(self) -> bool:
        return self._mailer is not None

    @property
    def changes_enabled(self) -> bool:
        return self._config.changes_enabled

    def link_path(self, purpose: str) -> str:
        """Where the mailed link points, under /_matrix/client."""
        return f"/unstable/{LINK_SEGMENTS[purpose]}/email/submit_token"

    # -- requestToken

    async def request_token(
        self,
        purpose: str,
        email: str,
        client_secret: str,
        send_attempt: int,
        next_link: str | None,
    ) -> str:
        """Mail a validation link for `purpose` (unless this send_attempt was mailed
        already) and answer the session ID."""
        if self._mailer is None:
            raise MatrixError(
                403, "M_THREEPID_DENIED", "This server does not send email (no email section)"
            )
        if purpose == ADD and not self._config.changes_enabled:
            raise MatrixError(400, "M_FORBIDDEN", "3PID changes are disabled on this server")
        address = canonical_email(email)
        check_client_secret(client_secret)
        if not 0 <= send_attempt <= MAX_SEND_ATTEMPT:
            raise invalid_param("send_attempt must be a non-negative integer")
        if next_link is not None:
            self._check_next_link(next_link)
        if purpose != PASSWORD_RESET and not self.allowed(address):
            raise MatrixError(
                403, "M_THREEPID_DENIED", "This email address is not allowed on this server"
            )
        owner = await self._store.user_of("email", address)
        refusal = None
        if purpose == PASSWORD_RESET and owner is None:
            refusal = MatrixError(400, "M_THREEPID_NOT_FOUND", "Email not found")
        elif purpose != PASSWORD_RESET and owner is not None:
            refusal = MatrixError(400, "M_THREEPID_IN_USE", "Email is already in use")
        if refusal is not None:
            if self._config.inhibit_errors:
                return secrets.token_urlsafe(24)  # looks like success; nothing is mailed
            raise refusal

        now = _now_ms()
        existing = await self._store.find_session(purpose, "email", address, client_secret)
        if existing is not None and existing.expires_at > now:
            if await self._store.advance_send_attempt(existing.session_id, send_attempt):
                await self._mail(existing)
            return existing.session_id
        new_id = secrets.token_urlsafe(24)
        session = await self._store.start_session(
            ValidationSession(
                session_id=new_id,
                purpose=purpose,
                medium="email",
                address=address,
                client_secret=client_secret,
                token=secrets.token_urlsafe(24),
                send_attempt=send_attempt,
                next_link=next_link,
                created_at=now,
                expires_at=now + self._lifetime_ms(),
                validated_at=None,
            )
        )
        if session.session_id != new_id:
            return session.session_id  # a concurrent identical request made and mailed it
        try:
            await self._mail(session)
        except MatrixError:
            # Nothing reached the user: forget the session so a retry mails again.
            await self._store.consume_session(session.session_id)
            raise
        return session.session_id

    def allowed(self, address: str) -> bool:
        patterns = [p for p in self._config.allowed_local if p.medium == "email"]
        return not self._config.allowed_local or any(p.pattern.match(address) for p in patterns)

    def _lifetime_ms(self) -> int:
        email = self._config.email
        return email.validation_token_lifetime_ms if email else 3_600_000

    def _check_next_link(self, next_link: str) -> None:
        """Where the browser goes after confirming: only http(s), and only the
        configured hosts when `next_link_domain_whitelist` is set (never javascript:
        or data: URLs on our own origin)."""
        if len(next_link) > MAX_NEXT_LINK_LENGTH:
            raise invalid_param("next_link is too long")
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in next_link):
            raise invalid_param("next_link must not contain spaces or control characters")
        try:
            parts = urlsplit(next_link)
        except ValueError:
            raise invalid_param("next_link is not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid_param("next_link must be an http or https URL")
        hosts = self._config.next_link_hosts
        if hosts is not None and parts.hostname.lower() not in hosts:
            raise invalid_param("next_link's host is not in next_link_domain_whitelist")

    async def _mail(self, session: ValidationSession) -> None:
        assert self._mailer is not None
        query = urlencode(
            {
                "token": session.token,
                "client_secret": session.client_secret,
                "sid": session.session_id,
            }
        )
        link = f"{self._base_url}_matrix/client{self.link_path(session.purpose)}?{query}"
        intro = _BODIES[session.purpose].format(app=self._mailer.app_name, server=self._server_name)
        text = (
            f"{intro}\n\nTo continue, open this link and confirm:\n\n{link}\n\n"
            "If this was not you, ignore this email: nothing changes until the link is"
            " opened and confirmed.\n"
        )
        html = (
            f"<p>{escape(intro)}</p><p>To continue, open this link and confirm:</p>"
            f'<p><a href="{escape(link)}">{escape(link)}</a></p>'
            "<p>If this was not you, ignore this email: nothing changes until the link is"
            " opened and confirmed.</p>"
        )
        try:
            await self._mailer.send(
                Mail(
                    to=session.address,
                    subject=_SUBJECTS[session.purpose] % self._server_name,
                    text=text,
                    html=html,
                )
            )
        except MailError:
            raise MatrixError(502, "M_UNKNOWN", "Unable to send email") from None

    # -- the mailed link

    @staticmethod
    def next_link_with_sid(session: ValidationSession) -> str | None:
        """Where the browser goes after confirming, told which session (as Synapse)."""
        if not session.next_link:
            return None
        parts = urlsplit(session.next_link)
        sid = urlencode({"sid": session.session_id})
        query = f"{parts.query}&{sid}" if parts.query else sid
        return urlunsplit(parts._replace(query=query))

    async def session_for_link(
        self, sid: str, client_secret: str, token: str
    ) -> ValidationSession | None:
        """The session a link names, if its secret and token match and it is unexpired."""
        session = await self._store.get_session(sid)
        if (
            session is None
            or not secrets.compare_digest(session.client_secret, client_secret)
            or not secrets.compare_digest(session.token, token)
            or session.expires_at <= _now_ms()
        ):
            return None
        return session

    async def confirm_link(
        self, sid: str, client_secret: str, token: str
    ) -> ValidationSession | None:
        """Validate the session (the user pressed confirm); None when the link is bad."""
        session = await self.session_for_link(sid, client_secret, token)
        if session is None:
            return None
        if not await self._store.mark_validated(sid, client_secret, token, _now_ms()):
            return None
        return session

    # -- using a validated session

    async def validated(self, purpose: str, sid: str, client_secret: str) -> ValidationSession:
        """The validated, unexpired session of `purpose`, or M_THREEPID_AUTH_FAILED."""
        session = await self._store.get_session(sid)
        if (
            session is None
            or session.purpose != purpose
            or not secrets.compare_digest(session.client_secret, client_secret)
            or session.validated_at is None
            or session.expires_at <= _now_ms()
        ):
            raise auth_failed()
        return session

    async def consume(self, session: ValidationSession) -> None:
        """Use a session once: a second use (a replay, a racing request) fails."""
        if not await self._store.consume_session(session.session_id):
            raise auth_failed()

    async def uia_stage(self, auth: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        """UIA stage m.login.email.identity: `threepid_creds` name a session validated
        for this endpoint's purpose (registering, or resetting a password)."""
        creds = auth.get("threepid_creds", auth.get("threepidCreds"))
        if not isinstance(creds, dict):
            raise StageFailed("M_MISSING_PARAM", "Missing threepid_creds")
        sid, client_secret = creds.get("sid"), creds.get("client_secret")
        if not (isinstance(sid, str) and isinstance(client_secret, str)) or len(sid) > 255:
            raise StageFailed("M_MISSING_PARAM", "threepid_creds needs sid and client_secret")
        purpose = REGISTRATION if ctx.uri == "/register" else PASSWORD_RESET
        try:
            session = await self.validated(purpose, sid, client_secret)
        except MatrixError as exc:
            raise StageFailed("M_UNAUTHORIZED", exc.message) from None
        owner = await self._store.user_of(session.medium, session.address)
        if purpose == REGISTRATION and owner is not None:
            raise StageFailed("M_THREEPID_IN_USE", "Email is already in use")
        return {"threepid_sid": sid, "threepid_client_secret": client_secret}

    async def add_to_user(self, user_id: str, session: ValidationSession) -> None:
        """Give the session's address to the user (after the session was consumed)."""
        if not await self._store.add(
            user_id, session.medium, session.address, session.validated_at or _now_ms(), _now_ms()
        ):
            raise MatrixError(400, "M_THREEPID_IN_USE", "Email is already in use")

    async def owner(self, medium: str, address: str) -> str | None:
        if medium != "email":
            return None
        try:
            return await self._store.user_of(medium, canonical_email(address))
        except MatrixError:
            return None

    async def remove(self, user_id: str, medium: str, address: str) -> bool:
        if medium == "email":
            try:
                address = canonical_email(address)
            except MatrixError:
                return False
        return await self._store.remove(user_id, medium, address)

    async def remove_all(self, user_id: str) -> None:
        await self._store.remove_all(user_id)

    async def of_user(self, user_id: str) -> list[UserThreepid]:
        return await self._store.of_user(user_id)

    async def expire_sessions(self) -> int:
        return await self._store.delete_expired_sessions(_now_ms())
