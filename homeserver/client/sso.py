"""Single sign-on routes (homeserver/accounts/sso.py does the work):

- `GET /login/sso/redirect[/{idpId}]?redirectUrl=`: to the provider (a page to pick one
  when several are configured and the client named none);
- `GET /_synapse/client/oidc/callback`: back from the provider; a login token goes to
  the client's redirectUrl, straight away for clients in `sso.client_whitelist`, else
  after the user confirms on our page which app gets their account (so a link with an
  attacker's redirectUrl cannot quietly hand them a login);
- `GET /auth/m.login.sso/fallback/web?session=`: UIA by signing in again (users whose
  account came from a provider have no password to type).
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from homeserver.accounts.sso import SsoError, SsoService, check_redirect_url
from homeserver.appstate import ACCOUNT_AUTH_STORE, CONFIG, RATE_LIMITERS, SESSIONS, SSO_SERVICE
from homeserver.client.pages import page
from homeserver.client.routes import add_route, client_ip
from homeserver.errors import MatrixError
from homeserver.http import query_param

COOKIE = "hs_sso_session"
CALLBACK_PATH = "/_synapse/client/oidc/callback"


def _sso(request: web.Request) -> SsoService:
    sso = request.config_dict[SSO_SERVICE]
    if not sso.enabled:
        raise MatrixError(404, "M_UNRECOGNIZED", "Single sign-on is not configured")
    return sso


async def _go(
    request: web.Request, idp_id: str, redirect_url: str | None, ui_session: str | None
) -> web.Response:
    request.config_dict[RATE_LIMITERS].check("sso_redirect", client_ip(request))
    url, browser_key = await _sso(request).start(idp_id, redirect_url, ui_session)
    response = web.HTTPFound(url)
    secure = (request.config_dict[CONFIG].public_baseurl or "").startswith("https://")
    response.set_cookie(
        COOKIE,
        browser_key,
        max_age=600,
        path="/_synapse/client/oidc",
        httponly=True,
        secure=secure,
        samesite="Lax",  # sent on the provider's top-level redirect back to us
    )
    raise response


def _picker(request: web.Request, link: str) -> web.Response:
    sso = _sso(request)
    items = "".join(
        f'<li><a href="{escape(link.format(idp=idp))}">{escape(p.config.idp_name)}</a></li>'
        for idp, p in sso.providers.items()
    )
    return page("Sign in", f"<p>Continue with:</p><ul>{items}</ul>")


async def get_redirect(request: web.Request) -> web.Response:
    redirect_url = check_redirect_url(query_param(request, "redirectUrl", required=True))
    sso = _sso(request)
    idp_id = request.match_info.get("idp_id")
    if idp_id is None and len(sso.providers) == 1:
        idp_id = next(iter(sso.providers))
    if idp_id is None:
        query = urlencode({"redirectUrl": redirect_url})
        return _picker(request, f"{request.path}/{{idp}}?{query}")
    return await _go(request, idp_id, redirect_url, None)


# What the UIA session's request does, in the user's words (the fallback page says
# what they are confirming, so a client cannot pass one action off as another).
_ACTIONS = (
    ("/delete_devices", "remove devices from your account"),
    ("/devices/", "remove a device from your account"),
    ("/account/deactivate", "deactivate your account"),
    ("/account/password", "change your password"),
    ("/account/3pid/add", "add an email address to your account"),
    ("/keys/device_signing/upload", "set up or reset your encryption identity"),
    ("/login/get_token", "sign in a new device with your account"),
)


async def get_uia_fallback(request: web.Request) -> web.Response:
    """Confirm it's you: the page says what the app wants to do and sends you to the
    provider (`&idp=`) to prove it."""
    session_id = query_param(request, "session", required=True)
    uia_session = None
    if len(session_id) <= 255:
        uia_session = await request.config_dict[ACCOUNT_AUTH_STORE].get_uia_session(session_id)
    if uia_session is None:
        raise MatrixError(400, "M_UNKNOWN", "Unknown session ID")
    sso = _sso(request)
    idp_id = request.query.get("idp")
    if idp_id is not None:
        return await _go(request, idp_id, None, session_id)
    action = next(
        (words for path, words in _ACTIONS if uia_session.uri.startswith(path)),
        "do something that needs you to confirm who you are",
    )
    links = "".join(
        f'<p><a href="{escape(request.path)}?'
        f'{escape(urlencode({"session": session_id, "idp": idp}))}">'
        f"Continue with {escape(p.config.idp_name)}</a></p>"
        for idp, p in sso.providers.items()
    )
    body = (
        f"<p>An app wants to {escape(action)}. To confirm, sign in again.</p>{links}"
        "<p>If you did not expect this, do not continue: your account may be at risk.</p>"
    )
    return page("Confirm it's you", body)


def _failed(message: str, status: int = 400) -> web.Response:
    return page("Sign-in failed", f"<p>{escape(message)}</p>", status)


async def get_callback(request: web.Request) -> web.Response:
    sso = _sso(request)
    state, code = request.query.get("state"), request.query.get("code")
    if "error" in request.query:
        description = request.query.get("error_description") or request.query["error"]
        return _failed(f"The identity provider says: {description[:300]}")
    if not state or not code or len(state) > 255 or len(code) > 4096:
        return _failed("This sign-in link is incomplete. Start again.")
    try:
        signed_in = await sso.finish(state, code, request.cookies.get(COOKIE))
    except SsoError as exc:
        return _failed(exc.message, exc.status)
    if signed_in.ui_auth_session is not None or signed_in.client_redirect_url is None:
        return page("Done", "<p>You have confirmed who you are. Return to your app.</p>")
    token, _lifetime = await request.config_dict[SESSIONS].issue_login_token(signed_in.user_id)
    target = signed_in.client_redirect_url
    separator = "&" if urlsplit(target).query else ("" if target.endswith("?") else "?")
    link = f"{target}{separator}{urlencode({'loginToken': token})}"
    whitelist = request.config_dict[CONFIG].sso.client_whitelist
    if any(target.startswith(prefix) for prefix in whitelist):
        raise web.HTTPFound(link)
    where = urlsplit(target).netloc or target.split(":", 1)[0]
    body = (
        f"<p>Continue to <b>{escape(where)}</b> signed in as "
        f"<b>{escape(signed_in.user_id)}</b>?</p>"
        f'<p><a href="{escape(link)}">Continue</a></p>'
        "<p>If you did not start this from an app you trust, close this page.</p>"
    )
    return page("Continue to your app", body)


def add_routes(client: web.Application, root: web.Application) -> None:
    add_route(client, "GET", "/login/sso/redirect", get_redirect)
    add_route(client, "GET", "/login/sso/redirect/{idp_id}", get_redirect)
    add_route(client, "GET", "/auth/m.login.sso/fallback/web", get_uia_fallback)
    root.router.add_get(CALLBACK_PATH, get_callback)
