"""Linking KakaoTalk as a notification channel: the two browser legs of Kakao's flow.

GET /api/channels/kakao/start     signed-in user -> 302 to Kakao's consent screen
GET /api/channels/kakao/callback  Kakao sends the browser back -> 302 to the channels
                                  page with ``?linked=kakao`` or ``?error=<code>``

Routes rather than Reflex events because the flow is a chain of top-level
redirects, and the session cookie (HttpOnly, SameSite=Lax) travels with those. The
user always comes from that cookie. The work is in ``app.services.kakao_link``; this
module turns its outcome into redirects and audit entries. Nothing that reaches the
browser, the log or the audit log carries a token or the authorization code.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from app import db
from app.api.auth_routes import _client_ip, _same_origin
from app.config import get_settings
from app.models.audit import OUTCOME_DENIED, OUTCOME_FAILED
from app.services import audit, auth, kakao_link

log = logging.getLogger(__name__)
router = APIRouter()

START_PATH = "/api/channels/kakao/start"
LINK_FAILED = "channels.kakao_link_failed"
_LOGIN = f"/login?{urlencode({'next': kakao_link.CHANNELS_PAGE})}"
# Refusals that may be someone reaching for another user's flow are "denied".
_DENIED = {"other_user", "browser_mismatch", "bad_state"}


async def _caller(request: Request) -> tuple[int | None, str]:
    token = request.cookies.get(auth.SESSION_COOKIE, "")
    async with db.session() as s:
        user = await auth.resolve_session(s, token)
    return (None, "") if user is None else (user.id, token)


def _back(**query: str) -> RedirectResponse:
    return RedirectResponse(f"{kakao_link.CHANNELS_PAGE}?{urlencode(query)}", status_code=302)


async def _failed(
    request: Request, user_id: int | None, failure: kakao_link.KakaoLinkFailed
) -> RedirectResponse:
    detail = {"reason": failure.reason}
    if failure.detail:
        detail["kakao_error"] = failure.detail
    await audit.record(
        LINK_FAILED,
        actor_id=user_id,
        target_type="notification_channel",
        target_id="kakao",
        outcome=OUTCOME_DENIED if failure.reason in _DENIED else OUTCOME_FAILED,
        ip=_client_ip(request),
        detail=detail,
    )
    log.info("Kakao link for user %s refused: %s %s", user_id, failure.reason, failure.detail)
    return _back(error=failure.code)


@router.get(START_PATH)
async def start(request: Request) -> RedirectResponse:
    user_id, session_token = await _caller(request)
    if user_id is None:
        return RedirectResponse(_LOGIN, status_code=302)
    # Another site may not start a flow in the user's name: with consent already given,
    # Kakao answers without asking and the link would complete unseen.
    cross_site = request.headers.get("sec-fetch-site", "") == "cross-site"
    if cross_site or not _same_origin(request):
        failure = kakao_link.KakaoLinkFailed(kakao_link.ERROR_STATE, "cross_site")
        return await _failed(request, user_id, failure)
    try:
        url = await kakao_link.start(get_settings(), user_id, session_token)
    except kakao_link.KakaoLinkFailed as failure:
        return await _failed(request, user_id, failure)
    return RedirectResponse(url, status_code=302)


@router.get(kakao_link.CALLBACK_PATH)
async def callback(request: Request) -> RedirectResponse:
    user_id, session_token = await _caller(request)
    if user_id is None:
        return RedirectResponse(_LOGIN, status_code=302)
    params = {k: v for k, v in request.query_params.items() if k in ("code", "state", "error")}
    try:
        row = await kakao_link.finish(
            get_settings(),
            user_id=user_id,
            session_token=session_token,
            params=params,
            ip=_client_ip(request),
        )
    except kakao_link.KakaoLinkFailed as failure:
        return await _failed(request, user_id, failure)
    log.info("user %s linked KakaoTalk as channel %s", user_id, row.id)
    return _back(linked="kakao")
