"""Every endpoint of the spec's client-server yaml is routed, or is on the short list
of features not built (each answers 404 M_UNRECOGNIZED and is in the README); every
routed path answers CORS preflights, and a wrong method is 405 with a Matrix error."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from homeserver.app import create_app
from homeserver.client.versions import SUPPORTED_VERSIONS

SPEC = Path("/work/shared/spec/data/api/client-server")

# (method, path) of spec endpoints deliberately not built (see the README).
NOT_BUILT = {
    # The OAuth 2.0 API (SSO is served, with oidc_providers configured).
    ("GET", "/_matrix/client/v1/auth_metadata"),
    # Policy servers (MSC4284): a discovery document of a policy server, not ours.
    ("GET", "/.well-known/matrix/policy_server"),
}


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path.strip())


def _spec_endpoints() -> set[tuple[str, str]]:
    found = set()
    for f in sorted(SPEC.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        variables = doc["servers"][0].get("variables", {})
        base = variables.get("basePath", {}).get("default", "")
        for path, ops in (doc.get("paths") or {}).items():
            for method in ops:
                if method in ("get", "put", "post", "delete"):
                    found.add((method.upper(), _norm(base + path)))
    return found


def _routes(app: Any) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()

    def walk(a: Any, prefix: str) -> None:
        for resource in a.router.resources():
            info = resource.get_info()
            if "app" in info:
                walk(info["app"], info["prefix"])
                continue
            path = info.get("formatter") or info.get("path")
            if not path.startswith(prefix):
                path = prefix + path
            out.update((route.method, _norm(path)) for route in resource)

    walk(app, "")
    return out


@pytest.mark.skipif(not SPEC.is_dir(), reason="spec checkout not present")
async def test_every_client_spec_endpoint_is_routed_or_known_missing(
    app_client: Any, tmp_config: Any
) -> None:
    app = create_app(tmp_config(public_baseurl="https://test.local/"))
    routed = _routes(app)
    spec = _spec_endpoints()
    missing = {e for e in spec if e not in routed}
    assert missing == NOT_BUILT
    for method, path in sorted(NOT_BUILT):
        response = await app_client.request(method, path.replace("{}", "x"))
        body = await response.json()
        assert (response.status, body["errcode"]) == (404, "M_UNRECOGNIZED"), (method, path)


async def test_cors_preflight_and_wrong_methods_on_every_route(app_client: Any) -> None:
    routes = sorted(
        (m, p) for m, p in _routes(app_client.server.app) if m not in ("HEAD", "OPTIONS")
    )
    paths = {p for _, p in routes if p.startswith("/_matrix/client")}
    assert len(paths) > 100
    for path in sorted(paths):
        concrete = path.replace("{}", "x")
        pre = await app_client.options(
            concrete,
            headers={"Origin": "https://app.element.io", "Access-Control-Request-Method": "GET"},
        )
        assert pre.status in (200, 204), concrete
        assert pre.headers["Access-Control-Allow-Origin"] == "*"
        assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        methods = {m for m, p in routes if p == path}
        if "PATCH" not in methods:
            wrong = await app_client.patch(concrete, json={})
            assert wrong.status == 405, concrete
            assert (await wrong.json())["errcode"] == "M_UNRECOGNIZED"
            assert wrong.headers["Access-Control-Allow-Origin"] == "*"


async def test_versions_advertise_up_to_v1_19(app_client: Any) -> None:
    body = await (await app_client.get("/_matrix/client/versions")).json()
    assert body["versions"] == list(SUPPORTED_VERSIONS)
    assert body["versions"][0] == "v1.1" and body["versions"][-1] == "v1.19"
