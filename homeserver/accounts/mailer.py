"""Sending mail through the operator's SMTP server (the `email` section).

The standard library speaks SMTP (`smtplib`) and builds the message (`email.message`);
both block, so each send runs on a worker thread. Bounds: at most MAX_CONCURRENT_SENDS
conversations at once (more wait their turn), each limited to the configured timeout, so
a stranger asking for mail cannot tie up more than that many threads and connections.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from homeserver.config.accounts_model import EmailConfig

logger = logging.getLogger(__name__)

MAX_CONCURRENT_SENDS = 4


class MailError(Exception):
    """The mail server could not be reached or refused the message."""


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str


class Mailer:
    def __init__(self, config: EmailConfig) -> None:
        self._config = config
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

    @property
    def app_name(self) -> str:
        return self._config.app_name

    def build(self, mail: Mail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._config.notif_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        domain = self._config.notif_from.rpartition("@")[2].strip(" >") or None
        message["Message-ID"] = make_msgid(domain=domain)
        message.set_content(mail.text)
        message.add_alternative(mail.html, subtype="html")
        return message

    async def send(self, mail: Mail) -> None:
        """Deliver to the SMTP server, or raise MailError."""
        message = self.build(mail)
        async with self._slots:
            try:
                await asyncio.to_thread(self._send_blocking, message, mail.to)
            except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
                logger.warning("sending mail to the SMTP server failed: %s", exc)
                raise MailError(str(exc)) from exc

    def _send_blocking(self, message: EmailMessage, to: str) -> None:
        smtp_config = self._config.smtp
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if smtp_config.force_tls:
            client = smtplib.SMTP_SSL(
                smtp_config.host, smtp_config.port, timeout=smtp_config.timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(smtp_config.host, smtp_config.port, timeout=smtp_config.timeout_s)
        with client:
            client.ehlo()
            if not smtp_config.force_tls and smtp_config.enable_tls:
                if client.has_extn("starttls"):
                    client.starttls(context=context)
                    client.ehlo()
                elif smtp_config.require_transport_security:
                    raise MailError("the SMTP server does not offer STARTTLS")
            if smtp_config.user is not None:
                client.login(smtp_config.user, smtp_config.password or "")
            # The envelope names the one recipient (never what the headers parse to).
            client.send_message(message, to_addrs=[to])
