"""PushRulesService: read and edit a user's push rules; cached merged rulesets.

The action generator asks for a ruleset at every event for every member, so merged
rulesets are cached per user and dropped on every change the user makes. The cache is
a named one (storage/cache.py), so in a worker deployment the drop reaches every
process: event persisters evaluate rules with it, client readers serve GET /pushrules
from it.
"""

from __future__ import annotations

from typing import Any

from homeserver.ephemeral.account_data import AccountDataService
from homeserver.errors import MatrixError, not_found
from homeserver.storage.cache import LruCache
from homeserver.storage.push import PushStore, RelativeRuleNotFound, StoredRule

from .defaults import default_rules
from .rules import KINDS, PushRule, RuleError, clean_actions, rule_from_client
from .ruleset import DefaultOverride, Ruleset, build_ruleset

RULESET_CACHE_SIZE = 10_000


def _bad(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def _rule_not_found() -> MatrixError:
    return not_found("The push rule was not found.")


class PushRulesService:
    def __init__(self, store: PushStore, account_data: AccountDataService | None = None) -> None:
        """With `account_data`, every change is also written as the user's
        `m.push_rules` account data, which moves their account-data stream so that
        incremental /syncs carry the new rules (awaited before the change is
        acknowledged)."""
        self._store = store
        self._cache: LruCache[str, Ruleset] = LruCache(RULESET_CACHE_SIZE, name="push_rulesets")
        self._account_data = account_data

    async def get_ruleset(self, user_id: str) -> Ruleset:
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        generation = self._cache.generation()  # a change while we read: not cached
        stored = await self._store.get_rules(user_id)
        by_kind: dict[str, list[PushRule]] = {k: [] for k in KINDS}
        for r in stored:
            if r.kind in by_kind:
                by_kind[r.kind].append(
                    PushRule(
                        r.kind,
                        r.rule_id,
                        tuple(r.actions),
                        tuple(r.conditions),
                        r.pattern,
                        default=False,
                        enabled=r.enabled,
                    )
                )
        changes = await self._store.get_default_changes(user_id)
        overrides = {
            rid: DefaultOverride(enabled, None if actions is None else tuple(actions))
            for rid, (enabled, actions) in changes.items()
        }
        ruleset = build_ruleset(user_id, by_kind, overrides)
        self._cache.set_if_current(user_id, ruleset, generation)
        return ruleset

    async def _changed(self, user_id: str) -> None:
        self._cache.invalidate(user_id)
        if self._account_data is not None:
            content = await self.account_data_content(user_id)
            await self._account_data.put(user_id, "m.push_rules", content)

    async def account_data_content(self, user_id: str) -> dict[str, Any]:
        """The user's rules as the content of `m.push_rules` account data."""
        return {"global": (await self.get_ruleset(user_id)).to_json()}

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> PushRule:
        _check_kind(kind)
        rule = (await self.get_ruleset(user_id)).find(kind, rule_id)
        if rule is None:
            raise _rule_not_found()
        return rule

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: dict[str, Any],
        *,
        before: str | None,
        after: str | None,
    ) -> None:
        _check_kind(kind)
        if rule_id.startswith("."):
            raise _bad("Cannot add or change server-default rules (rule_id starts with '.')")
        try:
            rule = rule_from_client(kind, rule_id, body)
        except RuleError as exc:
            raise _bad(str(exc)) from None
        for name, anchor in (("before", before), ("after", after)):
            if anchor is not None and anchor.startswith("."):
                raise _bad(f"Cannot add a rule relative to a server-default rule ({name})")
        existing = (await self.get_ruleset(user_id)).find(kind, rule_id)
        stored = StoredRule(
            kind,
            rule_id,
            [dict(c) for c in rule.conditions],
            rule.pattern,
            list(rule.actions),
            existing.enabled if existing is not None else True,
        )
        try:
            await self._store.put_rule(user_id, stored, before=before, after=after)
        except RelativeRuleNotFound as exc:
            raise MatrixError(400, "M_UNKNOWN", str(exc)) from None
        await self._changed(user_id)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        _check_kind(kind)
        if _is_default(user_id, kind, rule_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Cannot delete a server-default rule")
        if not await self._store.delete_rule(user_id, kind, rule_id):
            raise _rule_not_found()
        await self._changed(user_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        _check_kind(kind)
        if _is_default(user_id, kind, rule_id):
            await self._store.set_default_enabled(user_id, rule_id, enabled)
        elif not await self._store.set_rule_enabled(user_id, kind, rule_id, enabled):
            raise _rule_not_found()
        await self._changed(user_id)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        _check_kind(kind)
        try:
            cleaned = list(clean_actions(actions))
        except RuleError as exc:
            raise _bad(str(exc)) from None
        if _is_default(user_id, kind, rule_id):
            await self._store.set_default_actions(user_id, rule_id, cleaned)
        elif not await self._store.set_rule_actions(user_id, kind, rule_id, cleaned):
            raise _rule_not_found()
        await self._changed(user_id)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise _rule_not_found()


def _is_default(user_id: str, kind: str, rule_id: str) -> bool:
    return rule_id.startswith(".") and any(
        r.rule_id == rule_id for r in default_rules(user_id)[kind]
    )
