"""Sign-in and sign-out as plain form posts, so the session cookie can be HttpOnly.

Reflex state cannot set an HttpOnly cookie; a route can. The route sets it and
redirects, and the next page load's websocket carries it to the state. The OAuth
routes (``oauth_routes``) finish their flows with the same helpers.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from app import db
from app.api.client_ip import client_ip
from app.config import get_settings
from app.models.audit import OUTCOME_FAILED
from app.models.users import User
from app.services import audit, auth

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
    return client_ip(request.headers.get("x-forwarded-for", ""), request.client)


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


async def _start_session(request: Request, user: User, next_path: str) -> RedirectResponse:
    """A new session row, its HttpOnly cookie, and the redirect to ``next_path``."""
    settings = get_settings()
    async with db.session() as s:
        token = await auth.create_session(
            s,
            user,
            timedelta(hours=settings.session_ttl_hours),
            user_agent=request.headers.get("user-agent", ""),
            ip=_client_ip(request),
        )
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
    return response


async def _sign_in_failed(request: Request, reason: str, next_path: str) -> RedirectResponse:
    await audit.record(
        audit.SIGN_IN_FAILED,
        actor_id=None,
        outcome=OUTCOME_FAILED,
        ip=_client_ip(request),
        detail={"method": "password", "reason": reason},
    )
    return _back_to_login(reason, next_path)


@router.post("/auth/login")
async def login(request: Request) -> RedirectResponse:
    form = await request.form()
    email = str(form.get("email", "")).strip()
    password = str(form.get("password", ""))
    next_path = _safe_next(str(form.get("next", "")) or None)
    if not get_settings().local_login_enabled:
        return await _sign_in_failed(request, "local_login_disabled", next_path)
    if not _same_origin(request):
        return await _sign_in_failed(request, "bad_origin", next_path)
    if not email or not password:
        return _back_to_login("missing_fields", next_path)
    try:
        async with db.session() as s:
            user = await auth.authenticate(s, email, password, throttle(), _client_ip(request))
    except auth.RateLimited:
        return await _sign_in_failed(request, "rate_limited", next_path)
    except auth.AuthFailed:
        return await _sign_in_failed(request, "invalid_credentials", next_path)
    response = await _start_session(request, user, next_path)
    await audit.record(
        audit.SIGN_IN,
        actor_id=user.id,
        target_type="user",
        target_id=user.id,
        ip=_client_ip(request),
        detail={"method": "password"},
    )
    log.info("signed in user %s", user.id)
    return response


@router.post("/auth/logout")
async def logout(request: Request) -> RedirectResponse:
    if _same_origin(request):
        token = request.cookies.get(auth.SESSION_COOKIE)
        async with db.session() as s:
            user = await auth.resolve_session(s, token)
            await auth.revoke_session(s, token)
        if user is not None:
            await audit.record(
                audit.SIGN_OUT,
                actor_id=user.id,
                target_type="user",
                target_id=user.id,
                ip=_client_ip(request),
            )
    response = RedirectResponse("/login?signed_out=1", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response
