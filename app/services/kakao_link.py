"""Linking a user's KakaoTalk as a channel: Kakao's authorization code flow for the
``talk_message`` scope ("send to me").

The flow in flight is an ``OAuthFlow`` row, the same mechanism as signing in
(``app.services.oauth``): only the hash of the random ``state`` is stored, the row
lives ``OAUTH_FLOW_TTL_SECONDS``, and the callback deletes it in a statement whose row
count proves it was this request that did, so a state is used at most once. Its
``provider`` is ``kakao_talk``, so a sign-in state is never accepted here nor this one
there. The flow is bound to the user who started it (``link_user_id``) and to that
session: its "browser" hash is a hash of the session cookie, so a callback URL carried
into another browser, or another user's session, is refused.

Kakao's tokens are the user's credentials. They go from the token response straight
into the vault (``channels.add_kakao``); what is logged or audited is reason codes and
Kakao's error codes, never ``error_description``, which quotes the code we sent.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import delete
from sqlmodel import col

from app import db
from app.config import Settings
from app.models.common import utcnow
from app.models.identities import OAuthFlow
from app.services import channels, oauth
from app.services.channels import ChannelRow
from app.services.errors import ValidationFailed
from app.services.kakao_tokens import encode_tokens
from notifiers.kakao import TOKEN_PATH, KakaoTokens

log = logging.getLogger(__name__)

FLOW_PROVIDER = "kakao_talk"  # OAuthFlow.provider: never a sign-in provider's id
CALLBACK_PATH = "/api/channels/kakao/callback"
CHANNELS_PAGE = "/settings/channels"
SCOPE = "talk_message"
AUTHORIZE_PATH = "/oauth/authorize"
USER_ME_PATH = "/v2/user/me"

# What the channels page explains (``error.<code>`` in app/i18n/*.kakao_link.json).
ERROR_UNAVAILABLE = "kakao_link_unavailable"  # Kakao is not configured on this server
ERROR_STATE = "kakao_link_state"  # unknown, spent, expired or someone else's state
ERROR_DENIED = "kakao_link_denied"  # the user cancelled at Kakao
ERROR_SCOPE = "kakao_link_scope"  # talk_message was not agreed to
ERROR_KAKAO_DOWN = "kakao_link_kakao_down"  # Kakao timed out or answered 5xx
ERROR_CONFIG = "kakao_link_config"  # Kakao refused this server's client id / secret
ERROR_TOO_MANY = "kakao_link_too_many"  # the user's channel limit is reached
ERROR_FAILED = "kakao_link_failed"  # anything else: start again
ERROR_CODES = (
    ERROR_UNAVAILABLE,
    ERROR_STATE,
    ERROR_DENIED,
    ERROR_SCOPE,
    ERROR_KAKAO_DOWN,
    ERROR_CONFIG,
    ERROR_TOO_MANY,
    ERROR_FAILED,
)


class KakaoLinkFailed(Exception):
    """A refused or failed link. ``code`` is shown to the user; ``reason`` and
    ``detail`` (Kakao's error and error_code) are for the audit log. None holds a secret."""

    def __init__(self, code: str, reason: str, *, detail: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.detail = detail


def configured(settings: Settings) -> bool:
    return bool(settings.kakao_client_id)


def redirect_uri(settings: Settings) -> str:
    return settings.app_base_url.rstrip("/") + CALLBACK_PATH


def _session_binding(session_token: str) -> str:
    """What the flow's ``browser_hash`` is made of: the session, under its own label, so
    the stored hash is not the ``user_sessions.token_hash`` of the same cookie."""
    return f"kakao-link:{session_token}"


async def start(settings: Settings, user_id: int, session_token: str) -> str:
    """Record a flow for this user and session; return Kakao's authorization URL."""
    if not configured(settings):
        raise KakaoLinkFailed(ERROR_UNAVAILABLE, "not_configured")
    state = secrets.token_urlsafe(32)
    now = utcnow()
    async with db.session() as s:
        await s.exec(delete(OAuthFlow).where(col(OAuthFlow.expires_at) < now))  # type: ignore[call-overload]
        s.add(
            OAuthFlow(
                state_hash=oauth.hash_value(state),
                browser_hash=oauth.hash_value(_session_binding(session_token)),
                provider=FLOW_PROVIDER,
                next_path=CHANNELS_PAGE,
                link_user_id=user_id,
                created_at=now,
                expires_at=now + timedelta(seconds=settings.oauth_flow_ttl_seconds),
            )
        )
        await s.commit()
    query = {
        "response_type": "code",
        "client_id": settings.kakao_client_id,
        "redirect_uri": redirect_uri(settings),
        "scope": SCOPE,
        "state": state,
    }
    return f"{settings.kakao_auth_base.rstrip('/')}{AUTHORIZE_PATH}?{urlencode(query)}"


async def _consume(state: str, user_id: int, session_token: str) -> None:
    """Spend the flow of ``state``; it must be this user's, started in this session."""
    try:
        flow = await oauth.consume_flow(state, FLOW_PROVIDER, _session_binding(session_token))
    except oauth.OAuthFailure as failure:
        raise KakaoLinkFailed(ERROR_STATE, failure.reason) from None
    if flow.link_user_id != user_id:
        raise KakaoLinkFailed(ERROR_STATE, "other_user")


def _kakao_error(response: httpx.Response) -> str:
    """Kakao's ``error`` and ``error_code`` (e.g. ``invalid_grant KOE320``), nothing else."""
    body = _json(response)
    error = str(body.get("error", ""))[:40] or f"HTTP {response.status_code}"
    return f"{error} {str(body.get('error_code', ''))[:16]}".strip()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def _exchange(
    settings: Settings, client: httpx.AsyncClient, code: str
) -> tuple[KakaoTokens, set[str]]:
    form = {
        "grant_type": "authorization_code",
        "client_id": settings.kakao_client_id,
        "redirect_uri": redirect_uri(settings),
        "code": code,
    }
    if settings.kakao_client_secret:
        form["client_secret"] = settings.kakao_client_secret
    url = f"{settings.kakao_auth_base.rstrip('/')}{TOKEN_PATH}"
    try:
        response = await client.post(url, data=form)
    except httpx.TimeoutException:
        raise KakaoLinkFailed(ERROR_KAKAO_DOWN, "token_timeout") from None
    except httpx.HTTPError as exc:
        raise KakaoLinkFailed(
            ERROR_KAKAO_DOWN, "token_unreachable", detail=type(exc).__name__
        ) from None
    body = _json(response)
    access, refresh = body.get("access_token"), body.get("refresh_token")
    if response.status_code == 200 and isinstance(access, str) and isinstance(refresh, str):
        try:
            lifetime = int(body.get("expires_in", 0))
        except (TypeError, ValueError):
            lifetime = 0
        tokens = KakaoTokens(access, refresh, utcnow() + timedelta(seconds=lifetime))
        return tokens, set(str(body.get("scope", "")).replace(",", " ").split())
    detail = _kakao_error(response)
    if response.status_code == 429 or response.status_code >= 500:
        raise KakaoLinkFailed(ERROR_KAKAO_DOWN, "token_server_error", detail=detail)
    if body.get("error") == "invalid_client":
        log.error("Kakao refused KAKAO_CLIENT_ID/KAKAO_CLIENT_SECRET (%s)", detail)
        raise KakaoLinkFailed(ERROR_CONFIG, "token_invalid_client", detail=detail)
    raise KakaoLinkFailed(ERROR_FAILED, "token_refused", detail=detail)


async def _kakao_user_id(settings: Settings, client: httpx.AsyncClient, access: str) -> str:
    """The account's stable id: what makes a second link of it a re-link."""
    try:
        response = await client.get(
            f"{settings.kakao_api_base.rstrip('/')}{USER_ME_PATH}",
            headers={"Authorization": f"Bearer {access}"},
        )
    except httpx.TimeoutException:
        raise KakaoLinkFailed(ERROR_KAKAO_DOWN, "user_me_timeout") from None
    except httpx.HTTPError as exc:
        raise KakaoLinkFailed(
            ERROR_KAKAO_DOWN, "user_me_unreachable", detail=type(exc).__name__
        ) from None
    kakao_id = _json(response).get("id")
    if response.status_code == 200 and isinstance(kakao_id, int) and kakao_id > 0:
        return str(kakao_id)
    if response.status_code >= 500:
        raise KakaoLinkFailed(
            ERROR_KAKAO_DOWN, "user_me_server_error", detail=str(response.status_code)
        )
    raise KakaoLinkFailed(ERROR_FAILED, "user_me_refused", detail=str(response.status_code))


async def finish(
    settings: Settings,
    *,
    user_id: int,
    session_token: str,
    params: Mapping[str, str],
    ip: str = "",
) -> ChannelRow:
    """Check Kakao's callback, redeem the code and save the channel (or its new tokens).

    The flow is spent before anything else, whatever the outcome, so a callback URL
    works once. Nothing is written unless every check passed.
    """
    if not configured(settings):
        raise KakaoLinkFailed(ERROR_UNAVAILABLE, "not_configured")
    state, error, code = params.get("state", ""), params.get("error", ""), params.get("code", "")
    if error:
        # Kakao's "the user cancelled" (or another OAuth error); spend the flow if named.
        if state:
            await _consume(state, user_id, session_token)
        denied = error == "access_denied"
        raise KakaoLinkFailed(
            ERROR_DENIED if denied else ERROR_FAILED,
            "provider_denied" if denied else "provider_error",
            detail=error[:64],
        )
    await _consume(state, user_id, session_token)
    if not code:
        raise KakaoLinkFailed(ERROR_FAILED, "missing_code")
    async with httpx.AsyncClient(timeout=settings.notify_timeout) as http:
        tokens, scopes = await _exchange(settings, http, code)
        if SCOPE not in scopes:
            raise KakaoLinkFailed(
                ERROR_SCOPE, "scope_missing", detail=" ".join(sorted(scopes))[:64]
            )
        kakao_id = await _kakao_user_id(settings, http, tokens.access_token)
    try:
        async with db.session() as s:
            return await channels.add_kakao(s, user_id, kakao_id, encode_tokens(tokens), ip=ip)
    except ValidationFailed as exc:
        refused, _ = next(iter(exc.field_errors.values()))
        user_code = ERROR_TOO_MANY if refused == "channel_too_many" else ERROR_FAILED
        raise KakaoLinkFailed(user_code, refused) from None
