"""Application service registration files (`app_service_config_files`, Synapse's key).

Each file is the spec's registration YAML: id, url (may be null), as_token, hs_token,
sender_localpart, namespaces (users, aliases, rooms: regex + exclusive), rate_limited,
protocols, receive_ephemeral. A bad file is a config problem naming the file and key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from homeserver.config.reader import Reader, describe


@dataclass(frozen=True)
class Namespace:
    regex: str
    exclusive: bool


@dataclass(frozen=True)
class AppServiceConfig:
    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender_localpart: str
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    rate_limited: bool = True
    protocols: tuple[str, ...] = ()
    receive_ephemeral: bool = False
    # `org.matrix.msc3202`: E2EE device data of its users in transactions.
    msc3202: bool = False
    source: str = ""


def _namespaces(r: Reader, m: Mapping[str, Any], kind: str, where: str) -> tuple[Namespace, ...]:
    items = r.list(m, kind, where) or []
    out = []
    for i, item in enumerate(items):
        at = f"{where}.{kind}[{i}]"
        entry = r.mapping(item, at)
        if entry is None:
            continue
        regex = entry.get("regex")
        if not isinstance(regex, str) or not regex:
            r.problem(at, "needs a regex")
            continue
        try:
            re.compile(regex)
        except re.error as exc:
            r.problem(f"{at}.regex", f"bad regular expression: {exc}")
            continue
        exclusive = entry.get("exclusive", False)
        if not isinstance(exclusive, bool):
            r.problem(f"{at}.exclusive", f"expected true or false, got {describe(exclusive)}")
            exclusive = False
        out.append(Namespace(regex, exclusive))
    return tuple(out)


def read_appservices(r: Reader, top: Mapping[str, Any]) -> tuple[AppServiceConfig, ...]:
    paths = r.str_list(top, "app_service_config_files", "") or []
    services: list[AppServiceConfig] = []
    for i, raw_path in enumerate(paths):
        where = f"app_service_config_files[{i}]"
        path = r.resolve(raw_path)
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            r.problem(where, f"cannot read {path}: {exc}")
            continue
        file_reader = Reader(str(path), path.parent)
        m = file_reader.mapping(doc, "")
        if m is None:
            r.problem(where, f"{path}: expected a mapping")
            continue
        fields = {}
        for key in ("id", "as_token", "hs_token", "sender_localpart"):
            value = m.get(key)
            if not isinstance(value, str) or not value:
                file_reader.problem(key, "is required (a non-empty string)")
            fields[key] = value if isinstance(value, str) else ""
        url = m.get("url")
        if url is not None and not (
            isinstance(url, str) and url.startswith(("http://", "https://"))
        ):
            file_reader.problem("url", "expected an http(s) URL or null")
            url = None
        namespaces = file_reader.mapping(m.get("namespaces"), "namespaces") or {}
        protocols = file_reader.str_list(m, "protocols", "") or []
        service = AppServiceConfig(
            id=fields["id"],
            url=url,
            as_token=fields["as_token"],
            hs_token=fields["hs_token"],
            sender_localpart=fields["sender_localpart"],
            users=_namespaces(file_reader, namespaces, "users", "namespaces"),
            aliases=_namespaces(file_reader, namespaces, "aliases", "namespaces"),
            rooms=_namespaces(file_reader, namespaces, "rooms", "namespaces"),
            rate_limited=file_reader.bool(m, "rate_limited", "", True),
            protocols=tuple(protocols),
            receive_ephemeral=bool(
                m.get("receive_ephemeral") or m.get("de.sorunome.msc2409.push_ephemeral")
            ),
            msc3202=m.get("org.matrix.msc3202") is True,
            source=str(path),
        )
        r.problems.extend(file_reader.problems)
        services.append(service)
    ids = [s.id for s in services]
    tokens = [s.as_token for s in services]
    if len(set(ids)) != len(ids):
        r.problem("app_service_config_files", "two registrations share an id")
    if len(set(tokens)) != len(tokens):
        r.problem("app_service_config_files", "two registrations share an as_token")
    return tuple(services)
