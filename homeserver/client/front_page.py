"""What a browser finds at the server's root: `web_client_location` (Synapse's key, a
web client such as Element hosted elsewhere) if the operator set it, else a page that
says this is a Matrix homeserver (as Synapse's /_matrix/static/ "It works" page), so
an operator checking the proxy sees it answer and a user who typed the address learns
to use an app."""

from __future__ import annotations

from html import escape

from aiohttp import web

from homeserver.appstate import CONFIG, Mounts
from homeserver.client.pages import page

STATIC = "/_matrix/static/"


async def root(request: web.Request) -> web.Response:
    target = request.config_dict[CONFIG].web_client_location or STATIC
    raise web.HTTPFound(target)


async def static_page(request: web.Request) -> web.Response:
    server_name = escape(request.config_dict[CONFIG].server_name)
    return page(
        "Matrix homeserver",
        f"<h1>It works!</h1><p>This is the Matrix homeserver of <b>{server_name}</b>.</p>"
        "<p>To chat, sign in with a Matrix app (such as Element) using this server.</p>",
    )


def setup(mounts: Mounts) -> None:
    mounts.root.router.add_get("/", root)
    mounts.root.router.add_get(STATIC, static_page)
