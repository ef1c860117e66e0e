"""OpenID tokens (client `POST /user/{userId}/openid/request_token`, federation
`GET /openid/userinfo`): short-lived proofs of a user's identity for third parties.

A third-party service (an integration manager, a widget host) receives the token from
the client and asks our federation API who it belongs to. Tokens are kept in memory
only: they live an hour, cannot be used as access tokens, and a restart merely sends the
client back for a new one (Synapse keeps them in a table; nothing needs them to survive).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

TOKEN_LIFETIME_S = 3600
MAX_TOKENS = 100_000


class OpenIdTokens:
    """Issue and look up OpenID tokens (bounded: the oldest go first when full)."""

    def __init__(
        self,
        lifetime_s: int = TOKEN_LIFETIME_S,
        max_tokens: int = MAX_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime_s = lifetime_s
        self._max = max_tokens
        self._clock = clock
        self._tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def issue(self, user_id: str) -> str:
        """A new token for `user_id`, valid for `lifetime_s` seconds."""
        self._expire()
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (user_id, self._clock() + self.lifetime_s)
        while len(self._tokens) > self._max:
            self._tokens.popitem(last=False)
        return token

    def user_for(self, token: str) -> str | None:
        """The user a live token was issued to, or None (unknown or expired)."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        user_id, expires = entry
        if expires <= self._clock():
            del self._tokens[token]
            return None
        return user_id

    def _expire(self) -> None:
        now = self._clock()
        while self._tokens:
            token, (_, expires) = next(iter(self._tokens.items()))
            if expires > now:
                break
            del self._tokens[token]
