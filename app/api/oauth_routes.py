"""Sign-in with Google, Kakao, Naver and Apple; linking one of them to a signed-in account.

GET  /auth/providers             the enabled providers, as JSON
GET  /auth/login/{provider}      start signing in (``next``: a same-site path)
GET  /auth/link/{provider}       start linking, for a signed-in user
GET  /auth/callback/{provider}   the provider sends the browser back here
POST /auth/callback/{provider}   Apple's form_post callback (relayed to the GET)

Apple posts its answer from its own site. A SameSite=Lax cookie does not travel
with a cross-site POST, but it does with a top-level GET, so the POST is answered
with a 303 to the same callback as a GET, and the flow is checked there, cookie
and all. The work is in ``app.services.oauth``; this module handles cookies,
redirects and the audit log.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.datastructures import URL

from app import db
from app.api.auth_routes import _back_to_login, _client_ip, _safe_next, _secure, _start_session
from app.config import get_settings
from app.i18n import language_from_accept, normalize_language
from app.models.audit import OUTCOME_DENIED, OUTCOME_FAILED
from app.services import audit, auth, oauth
from app.services import oauth_providers as providers

log = logging.getLogger(__name__)
router = APIRouter()

LANG_COOKIE = "tw_lang"
# Refusals that protect someone else's account are "denied"; the rest "failed".
_DENIED = {"email_exists", "identity_taken", "browser_mismatch", "bad_state", "account_disabled"}


def _browser_token(request: Request) -> str:
    current = request.cookies.get(oauth.BROWSER_COOKIE, "")
    return current if 20 <= len(current) <= 100 else secrets.token_urlsafe(32)


def _set_browser_cookie(request: Request, response: RedirectResponse, token: str) -> None:
    response.set_cookie(
        oauth.BROWSER_COOKIE,
        token,
        max_age=get_settings().oauth_flow_ttl_seconds,
        httponly=True,
        secure=_secure(request),
        samesite="lax",
        path="/auth/",
    )


async def _current_user_id(request: Request) -> int | None:
    async with db.session() as s:
        user = await auth.resolve_session(s, request.cookies.get(auth.SESSION_COOKIE))
    return user.id if user is not None else None


async def _failed(
    request: Request, provider_id: str, failure: oauth.OAuthFailure, next_path: str = "/"
) -> RedirectResponse:
    detail = {"provider": provider_id[:16], "reason": failure.reason}
    if failure.detail:
        detail["provider_error"] = failure.detail
    await audit.record(
        audit.SIGN_IN_FAILED,
        actor_id=failure.user_id,
        target_type="identity_provider",
        target_id=provider_id[:16],
        outcome=OUTCOME_DENIED if failure.reason in _DENIED else OUTCOME_FAILED,
        ip=_client_ip(request),
        detail=detail,
    )
    log.info("oauth %s refused: %s", provider_id[:16], failure.reason)
    return _back_to_login(failure.user_code, next_path)


@router.get("/auth/providers")
async def list_providers() -> JSONResponse:
    found = providers.enabled_providers(get_settings())
    return JSONResponse(
        {
            "providers": [{"id": p.id} for p in found],
            "local_login": get_settings().local_login_enabled,
        }
    )


async def _start(request: Request, provider_id: str, link: bool) -> RedirectResponse:
    settings = get_settings()
    next_path = _safe_next(request.query_params.get("next"))
    provider = providers.get_provider(settings, provider_id)
    if provider is None:
        return await _failed(request, provider_id, oauth.OAuthFailure("unknown_provider"))
    link_user_id = None
    if link:
        link_user_id = await _current_user_id(request)
        if link_user_id is None:
            failure = oauth.OAuthFailure("link_requires_sign_in")
            return await _failed(request, provider_id, failure, next_path)
    token = _browser_token(request)
    try:
        url = await oauth.start(
            settings,
            provider,
            next_path=next_path,
            browser_token=token,
            link_user_id=link_user_id,
        )
    except oauth.OAuthFailure as failure:
        return await _failed(request, provider_id, failure, next_path)
    response = RedirectResponse(url, status_code=303)
    _set_browser_cookie(request, response, token)
    return response


@router.get("/auth/login/{provider_id}")
async def login_with(provider_id: str, request: Request) -> RedirectResponse:
    return await _start(request, provider_id, link=False)


@router.get("/auth/link/{provider_id}")
async def link_with(provider_id: str, request: Request) -> RedirectResponse:
    return await _start(request, provider_id, link=True)


def _language(request: Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen:
        return normalize_language(chosen)
    return language_from_accept(request.headers.get("accept-language"))


@router.get("/auth/callback/{provider_id}")
async def callback(provider_id: str, request: Request) -> RedirectResponse:
    settings = get_settings()
    provider = providers.get_provider(settings, provider_id)
    if provider is None:
        return await _failed(request, provider_id, oauth.OAuthFailure("unknown_provider"))
    params = {k: v for k, v in request.query_params.items() if k in ("code", "state", "error")}
    try:
        flow, identity = await oauth.fetch_identity(
            settings, provider, params, request.cookies.get(oauth.BROWSER_COOKIE)
        )
        current = await _current_user_id(request) if flow.link_user_id is not None else None
        done = await oauth.resolve_user(
            flow, identity, current_user_id=current, language=_language(request)
        )
    except oauth.OAuthFailure as failure:
        return await _failed(request, provider_id, failure)

    ip = _client_ip(request)
    if flow.link_user_id is not None:
        if done.linked:
            await audit.record(
                audit.IDENTITY_LINKED,
                actor_id=done.user.id,
                target_type="user",
                target_id=done.user.id,
                ip=ip,
                detail={"provider": provider.id},
            )
            log.info("user %s linked a %s identity", done.user.id, provider.id)
        return RedirectResponse(done.next_path, status_code=303)

    response = await _start_session(request, done.user, done.next_path)
    await audit.record(
        audit.SIGN_IN,
        actor_id=done.user.id,
        target_type="user",
        target_id=done.user.id,
        ip=ip,
        detail={"method": "oauth", "provider": provider.id, "new_user": done.created_user},
    )
    log.info("signed in user %s with %s", done.user.id, provider.id)
    return response


@router.post("/auth/callback/{provider_id}")
async def callback_form_post(provider_id: str, request: Request) -> RedirectResponse:
    provider = providers.get_provider(get_settings(), provider_id)
    if provider is None or provider.response_mode != "form_post":
        failure = oauth.OAuthFailure("unexpected_form_post")
        return await _failed(request, provider_id, failure)
    form = await request.form()
    relay = {k: str(form[k]) for k in ("code", "state", "error") if k in form}
    url = URL(f"/auth/callback/{provider.id}").include_query_params(**relay)
    return RedirectResponse(str(url), status_code=303)
