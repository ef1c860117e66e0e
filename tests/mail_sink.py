"""A real SMTP server on loopback (aiosmtpd) that keeps what it is sent, for the tests of
the mail the homeserver sends (validation links, password resets).

`MailSink` runs aiosmtpd's controller on its own thread; `await sink.mail_after(n)` waits
for the message after the first n and parses it (the standard library's email parser), and
`mail.link()` is the one homeserver link in its text part.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from aiosmtpd.controller import Controller

from tests.ports import free_port


@dataclass(frozen=True)
class ReceivedMail:
    envelope_to: list[str]
    message: EmailMessage
    received_at: float = field(default_factory=time.monotonic)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "no text part"
        return part.get_content()  # type: ignore[no-any-return, attr-defined]

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "no html part"
        return part.get_content()  # type: ignore[no-any-return, attr-defined]

    def link(self) -> str:
        """The path and query of the one link in the text (to request from a test client)."""
        links = re.findall(r"https?://\S+", self.text)
        assert len(links) == 1, links
        parts = urlsplit(links[0])
        return f"{parts.path}?{parts.query}"


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self._sink.deliver(ReceivedMail(list(envelope.rcpt_tos), message))
        return "250 OK"


class MailSink:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def deliver(self, mail: ReceivedMail) -> None:
        with self._lock:
            self.received.append(mail)

    def email_config(self, **extra: Any) -> dict[str, Any]:
        """The homeserver's `email` section pointing here."""
        return {
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "notif_from": "Test Server <noreply@test.local>",
            "enable_tls": False,
            **extra,
        }

    async def mail_after(self, seen: int, timeout: float = 10.0) -> ReceivedMail:
        """The first mail after the first `seen` ones (waiting for it)."""
        want = seen + 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.received) < want:
            assert loop.time() < deadline, f"no mail arrived (have {len(self.received)})"
            await asyncio.sleep(0.02)
        return self.received[want - 1]
