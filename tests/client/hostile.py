"""Hostile inputs and the machinery to throw them at every route of the app.

Shared by tests/client/test_hostile_inputs.py and tests/federation/test_hostile_inputs.py:
route enumeration from the real router, path filling with raw (pre-encoded) hostile
segments, raw bodies the JSON reader must refuse, one-field-at-a-time body mutations,
hostile query strings, and a `Sender` that records every answer that is a 5xx, not
JSON, lacks an errcode, or takes too long.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

# How long one request may take before it counts as a hang.
REQUEST_TIMEOUT = 5.0

DEEP = 10_000

# Path segments, already percent-encoded as they go on the wire.
HOSTILE_PATH_VALUES: list[str] = [
    "..",
    "%2E%2E",
    "[::1",
    "!r:[::1",
    "@u:%5B::1",
    "$e:[::1]:99999",
    "A" * 300,
    "%00",
    "!%00:test.local",
    "%E2%98%83%C3%BC",
    "@%E2%98%83:test.local",
    "%ED%A0%80",  # a lone surrogate, encoded as (invalid) UTF-8
    "%FF%FE",
    "%25",
    "a%2Fb",
    "@:",
    "!:",
    "#:",
    "$",
]

RAW_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'"string"',
    b"12",
    b"\xef\xbb\xbf{}",
    '{"a": "caf\u00e9"}'.encode("latin-1"),
    b'{"a": "\xed\xa0\x80"}',
    b'{"a": "\\ud800"}',
    b'{"\\udc00": 1}',
    b'{"a": 1e99999}',
    b'{"a": NaN}',
    b'{"a": -Infinity}',
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    b'{"a": 1',
]

# Values swapped, one at a time, into an otherwise plausible body.
HOSTILE_VALUES: list[Any] = [
    True,
    None,
    {},
    [],
    "x",
    "",
    -1,
    2**53 + 1,
    2**64,
    -(2**63) - 1,
    10**40,
    1.5,
    -1e300,
    [None],
    {"": None},
    [[[[[[[[[[{}]]]]]]]]]],
    "A" * 70_000,
    "\ud800",
    "\u2603\x00\u202e",
    {"a": [{"b": {"c": True}}]},
]

# Whole query strings (raw), one hostile parameter each.
HOSTILE_QUERIES: list[str] = [
    "limit=-1",
    "limit=abc",
    "limit=99999999999999999999",
    "limit=1e3",
    "limit=",
    "dir=x",
    "dir=",
    "from=garbage",
    "from=%00",
    "from=%ED%A0%80",
    "from=s99999999999999999999_1",
    "to=garbage",
    "since=garbage",
    "since=s-1_-1",
    "timeout=1e309",
    "timeout=-1",
    "timeout=abc",
    "filter=garbage",
    "filter=%7B%22room%22%3A%5B%5D%7D",
    "filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A%22x%22%7D%7D%7D",
    "full_state=maybe",
    "set_presence=x",
    "ts=abc",
    "ts=1e999",
    "server=%5B::1",
    "server_name=..&via=%00",
    "ver=%FF",
    "v=%00&limit=5",
    "event_id=garbage",
    "user_id=%E2%98%83",
    "room_alias=x",
    "field=%00",
    "only=x",
    "include_unredacted_content=x",
    "suggested_only=x&max_depth=-1",
    "recurse=x",
    "username=%ED%A0%80",
    "access_token=%00",
]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # formatter, e.g. /_matrix/client/v3/rooms/{room_id}/state
    params: tuple[str, ...]
    handler: Any


def enumerate_routes(app: web.Application, prefixes: tuple[str, ...]) -> list[Route]:
    """Every (method, path) the app serves under `prefixes`, sub-apps included, no HEAD."""
    out: list[Route] = []

    def walk(application: web.Application) -> None:
        for resource in application.router.resources():
            info = resource.get_info()
            if "app" in info:
                walk(info["app"])
                continue
            path = info.get("formatter") or info.get("path")
            if not path or not path.startswith(prefixes):
                continue
            for route in resource:
                if route.method == "HEAD":
                    continue
                params = tuple(re.findall(r"\{([^}:]+)", path))
                out.append(Route(route.method, path, params, route.handler))

    walk(app)
    return out


def fill_path(template: str, values: dict[str, str], raw: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """Substitute {name} with its value, percent-encoded unless the name is in `raw`."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values.get(name, "x")
        return value if name in raw else quote(value, safe="")

    return re.sub(r"\{([^}:]+)\}", sub, template)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON value (dict keys, first list item), outermost first."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*prefix, key))
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list) and value:
        out.append((*prefix, 0))
        out.extend(_paths(value[0], (*prefix, 0)))
    return out


def _replace(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    new = copy.deepcopy(body)
    target = new
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return new


def field_mutations(body: dict[str, Any], rng: random.Random, max_mutations: int) -> list[Any]:
    """Copies of `body` with one field swapped for a hostile value.

    Every field (nested too) is swapped at least once; the remaining budget goes to
    random (field, value) pairs, and the first values cycle so each type gets used.
    """
    paths = _paths(body)
    out: list[Any] = []
    for i, path in enumerate(paths):
        out.append(_replace(body, path, HOSTILE_VALUES[i % len(HOSTILE_VALUES)]))
    if paths:
        while len(out) < max_mutations:
            out.append(_replace(body, rng.choice(paths), rng.choice(HOSTILE_VALUES)))
    # Every top-level field of one hostile type at once.
    for value in (True, [], {}, None):
        if len(out) >= max_mutations + 4:
            break
        out.append({key: value for key in body} or {"x": value})
    return out


# Routes whose success answer is the bytes of a file, not JSON.
FILE_ROUTES = re.compile(
    r"/_matrix/(client/v1|media/(v3|r0|v1))/media/(download|thumbnail)/|"
    r"/_matrix/media/(v3|r0)/(download|thumbnail)/"
)


def check_response(status: int, content_type: str, body: bytes, path: str = "") -> str | None:
    """Why this answer is unacceptable, or None when it is fine."""
    if status >= 500:
        return f"status {status}: {body[:300]!r}"
    if status == 204 or (status < 400 and not body):
        return None
    if status < 300 and FILE_ROUTES.search(path):
        return None
    if "json" not in content_type:
        return f"status {status} with {content_type or 'no content type'}: {body[:200]!r}"
    try:
        parsed = json.loads(body)
    except ValueError:
        return f"status {status} with a body that is not JSON: {body[:200]!r}"
    if status == 401 and isinstance(parsed, dict) and isinstance(parsed.get("flows"), list):
        return None  # a user-interactive auth challenge: errcode only after a failed stage
    if status >= 400 and not (isinstance(parsed, dict) and isinstance(parsed.get("errcode"), str)):
        return f"status {status} without an errcode: {body[:200]!r}"
    return None


class Sender:
    """Sends raw requests (no URL normalisation) and records every bad answer."""

    def __init__(
        self,
        client: TestClient,
        sign: Callable[[str, str, bytes | None], dict[str, str]] | None = None,
    ) -> None:
        self.client = client
        self.base = str(client.make_url("")).rstrip("/")
        self.sign = sign
        self.failures: list[str] = []
        self.count = 0
        self.log: list[tuple[str, str, int, bytes, bytes]] = []  # method, path, status, body, data

    async def __call__(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        self.count += 1
        headers = dict(headers)
        if self.sign is not None:
            headers.update(self.sign(method, path, data))
        url = URL(self.base + path, encoded=True)
        label = f"{method} {path[:160]} body={(data or b'')[:80]!r}"
        try:
            status, content_type, body = await asyncio.wait_for(
                self._request(method, url, data, headers), REQUEST_TIMEOUT
            )
        except TimeoutError:
            self.failures.append(f"{label}: no answer within {REQUEST_TIMEOUT}s")
            return 0, b""
        self.log.append((method, path, status, body[:200], (data or b"")[:150]))
        problem = check_response(status, content_type, body, path)
        if problem:
            self.failures.append(f"{label}: {problem}")
        return status, body

    async def _request(
        self, method: str, url: URL, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        async with self.client.session.request(method, url, data=data, headers=headers) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


Send = Callable[[str, str, bytes | None, dict[str, str]], Awaitable[tuple[int, bytes]]]
