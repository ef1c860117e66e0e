"""The configured application services: who they are, what they may act as, and what
they are interested in (spec: application service API, namespaces)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.config.appservices import AppServiceConfig, Namespace


@dataclass(frozen=True)
class AppService:
    config: AppServiceConfig
    server_name: str

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def sender(self) -> str:
        return f"@{self.config.sender_localpart}:{self.server_name}"

    @staticmethod
    def _matches(namespaces: Sequence[Namespace], value: str, exclusive_only: bool = False) -> bool:
        return any(
            re.fullmatch(ns.regex, value) and (ns.exclusive or not exclusive_only)
            for ns in namespaces
        )

    def is_user_in_namespace(self, user_id: str) -> bool:
        return user_id == self.sender or self._matches(self.config.users, user_id)

    def is_exclusive_user(self, user_id: str) -> bool:
        return self._matches(self.config.users, user_id, exclusive_only=True)

    def is_alias_in_namespace(self, alias: str) -> bool:
        return self._matches(self.config.aliases, alias)

    def is_exclusive_alias(self, alias: str) -> bool:
        return self._matches(self.config.aliases, alias, exclusive_only=True)

    def is_room_in_namespace(self, room_id: str) -> bool:
        return self._matches(self.config.rooms, room_id)


class AppServices:
    def __init__(self, configs: Iterable[AppServiceConfig], server_name: str) -> None:
        self.all = [AppService(c, server_name) for c in configs]
        self._by_token = {s.config.as_token: s for s in self.all}
        self._by_id = {s.id: s for s in self.all}

    async def create_senders(self, accounts: Any) -> None:
        """Each appservice acts as its `sender_localpart` user: make the missing ones."""
        for service in self.all:
            if await accounts.get_user(service.sender) is None:
                await accounts.create_user(service.sender, None)

    def __bool__(self) -> bool:
        return bool(self.all)

    def by_token(self, token: str) -> AppService | None:
        return self._by_token.get(token)

    def by_id(self, service_id: str) -> AppService | None:
        return self._by_id.get(service_id)

    def exclusive_owner_of_user(self, user_id: str) -> AppService | None:
        return next((s for s in self.all if s.is_exclusive_user(user_id)), None)

    def exclusive_owner_of_alias(self, alias: str) -> AppService | None:
        return next((s for s in self.all if s.is_exclusive_alias(alias)), None)

    def unlimited_user(self, user_id: str) -> bool:
        """A user of an appservice registered with `rate_limited: false`."""
        return any(not s.config.rate_limited and s.is_user_in_namespace(user_id) for s in self.all)

    def for_alias(self, alias: str) -> list[AppService]:
        return [s for s in self.all if s.is_alias_in_namespace(alias)]
