"""The registration UIA stages that ask for a human: m.login.recaptcha (the client's
solved reCAPTCHA, checked with the captcha service's siteverify API, as Synapse) and
m.login.terms (the user accepted the server's policy; the version is recorded).

Bounds: one siteverify request per attempt (registration attempts are rate-limited
per address before they get here), VERIFY_TIMEOUT_S each, its answer read up to
MAX_VERIFY_BYTES; the captcha service is the operator's configured URL.
"""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

from homeserver.accounts.uia import StageContext, StageFailed, UserInteractiveAuth
from homeserver.config import Config
from homeserver.config.accounts_model import CaptchaConfig
from homeserver.errors import MatrixError

log = logging.getLogger(__name__)

RECAPTCHA = "m.login.recaptcha"
TERMS = "m.login.terms"
VERIFY_TIMEOUT_S = 10.0
MAX_VERIFY_BYTES = 64 * 1024
MAX_RESPONSE_CHARS = 8192


class CaptchaStage:
    def __init__(self, config: CaptchaConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def check(self, auth: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        response = auth.get("response")
        if not isinstance(response, str) or not 0 < len(response) <= MAX_RESPONSE_CHARS:
            raise StageFailed("M_CAPTCHA_NEEDED", "Captcha response is required")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=VERIFY_TIMEOUT_S)
            )
        try:
            async with self._session.post(
                self._config.siteverify_api,
                data={"secret": self._config.private_key, "response": response},
            ) as answer:
                raw = await answer.content.read(MAX_VERIFY_BYTES)
                verdict = json.loads(raw) if answer.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("the captcha service could not be asked: %s", exc)
            raise MatrixError(502, "M_UNKNOWN", "Could not check the captcha") from None
        if not isinstance(verdict, dict) or verdict.get("success") is not True:
            raise StageFailed("M_UNAUTHORIZED", "Captcha authentication failed")
        return {}


def install_registration_stages(
    uia: UserInteractiveAuth, config: Config, stack: AsyncExitStack
) -> None:
    """Offer the stages the configuration asks registration for."""
    registration = config.registration
    if registration.captcha is not None:
        stage = CaptchaStage(registration.captcha)
        stack.push_async_callback(stage.close)
        uia.add_stage(RECAPTCHA, stage.check)
    consent = registration.consent
    if consent is not None and consent.require_at_registration:
        version = consent.version

        async def accept_terms(auth: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
            return {"consent_version": version}

        uia.add_stage(TERMS, accept_terms)
