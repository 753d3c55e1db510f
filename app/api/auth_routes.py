"""Sign-in and sign-out as plain form posts, so the session cookie can be HttpOnly.

Reflex state cannot set an HttpOnly cookie; a route can. The route sets it and
redirects, and the next page load's websocket carries it to the state.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from app import db
from app.config import get_settings
from app.services import auth

log = logging.getLogger(__name__)
router = APIRouter()
_throttle: auth.LoginThrottle | None = None


def throttle() -> auth.LoginThrottle:
    global _throttle
    if _throttle is None:
        s = get_settings()
        _throttle = auth.LoginThrottle(s.login_max_failures, s.login_window_seconds)
    return _throttle


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _safe_next(value: str | None) -> str:
    """Only same-site paths: an open redirect after sign-in is a phishing aid."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _secure(request: Request) -> bool:
    mode = get_settings().cookie_secure
    if mode != "auto":
        return mode == "true"
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return proto.split(",")[0].strip() == "https"


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def _back_to_login(error: str, next_path: str) -> RedirectResponse:
    query = {"error": error}
    if next_path != "/":
        query["next"] = next_path
    return RedirectResponse(f"/login?{urlencode(query)}", status_code=303)


@router.post("/auth/login")
async def login(request: Request) -> RedirectResponse:
    form = await request.form()
    email = str(form.get("email", "")).strip()
    password = str(form.get("password", ""))
    next_path = _safe_next(str(form.get("next", "")) or None)
    if not _same_origin(request):
        return _back_to_login("bad_origin", next_path)
    if not email or not password:
        return _back_to_login("missing_fields", next_path)
    settings = get_settings()
    try:
        async with db.session() as s:
            user = await auth.authenticate(s, email, password, throttle(), _client_ip(request))
            token = await auth.create_session(
                s,
                user,
                timedelta(hours=settings.session_ttl_hours),
                user_agent=request.headers.get("user-agent", ""),
                ip=_client_ip(request),
            )
    except auth.RateLimited:
        return _back_to_login("rate_limited", next_path)
    except auth.AuthFailed:
        return _back_to_login("invalid_credentials", next_path)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_hours * 3600,
        httponly=True,
        secure=_secure(request),
        samesite="lax",
        path="/",
    )
    log.info("signed in user %s", user.id)
    return response


@router.post("/auth/logout")
async def logout(request: Request) -> RedirectResponse:
    if _same_origin(request):
        async with db.session() as s:
            await auth.revoke_session(s, request.cookies.get(auth.SESSION_COOKIE))
    response = RedirectResponse("/login?signed_out=1", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response
