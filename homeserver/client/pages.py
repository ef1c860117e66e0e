"""The few HTML pages a browser sees from us (a mailed link, a single sign-in): one
layout, and headers that keep them inert: no framing (a button on them cannot be
clickjacked), no scripts, nothing loaded from elsewhere, forms post only back to us."""

from __future__ import annotations

from html import escape

from aiohttp import web

_LAYOUT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>{title}</h1>{body}</body></html>
"""
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page(title: str, body: str, status: int = 200) -> web.Response:
    """A page; `body` is HTML the caller escaped."""
    return web.Response(
        status=status,
        text=_LAYOUT.format(title=escape(title), body=body),
        content_type="text/html",
        headers=PAGE_HEADERS,
    )
