"""KakaoTalk "send to me" (talk memo API): the alert arrives in the user's own chat.

Kakao has no bot identity for one-to-one alerts without a business channel, so we act
as the user: their Kakao sign-in token with the ``talk_message`` scope. Those tokens
are the user's credentials, kept encrypted in the app's vault, so this module never
stores them itself: an injected ``KakaoTokenStore`` loads them at the moment of use and
saves refreshed ones. Access tokens live hours; the refresh token (months) is rotated by
Kakao when it nears expiry, and a rotated one must be saved or the user is silently
disconnected a month later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import httpx

from notifiers.base import Delivered, DeliveryResult, Message, PermanentFailure, Retryable
from notifiers.webpush import push_parts, retry_after_seconds

log = logging.getLogger(__name__)

MEMO_PATH = "/v2/api/talk/memo/default/send"
TOKEN_PATH = "/oauth/token"
TEXT_LIMIT = 200  # Kakao's limit for a text template
EXPIRY_MARGIN = timedelta(seconds=60)  # refresh a little early: the clocks differ
RECONNECT = "the user must reconnect Kakao"
# Kakao common error codes that say "try again later" although they come as HTTP 400.
_TRANSIENT_CODES = {-1: "internal error", -7: "service maintenance", -603: "internal timeout"}


@dataclass(frozen=True, slots=True)
class KakaoTokens:
    """The user's Kakao OAuth tokens. ``repr`` hides them: they end up in tracebacks."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime  # timezone-aware


@runtime_checkable
class KakaoTokenStore(Protocol):
    """Where the app keeps each recipient's tokens (encrypted). ``recipient`` is the
    ``Message.recipient`` of the Kakao channel: an opaque credential id, not a token."""

    async def load(self, recipient: str) -> KakaoTokens | None: ...

    async def save(self, recipient: str, tokens: KakaoTokens) -> None: ...


class _Stop(Exception):
    """A refresh ended the attempt; carries the outcome to report."""

    def __init__(self, outcome: Retryable | PermanentFailure) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class KakaoMemoNotifier:
    channel = "kakao"

    def __init__(
        self,
        *,
        client_id: str,
        token_store: KakaoTokenStore,
        client_secret: str = "",
        api_base: str = "https://kapi.kakao.com",
        auth_base: str = "https://kauth.kakao.com",
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        default_url: str = "",
        button_title: str = "자세히 보기",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``client_id`` is the app's REST API key, ``client_secret`` only if the app has
        one switched on. ``default_url`` is the link when the alert text carries none;
        Kakao opens only links on domains registered for the app."""
        self.client_id = client_id
        self._client_secret = client_secret
        self.token_store = token_store
        self.api_base = api_base.rstrip("/")
        self.auth_base = auth_base.rstrip("/")
        self.timeout = timeout
        self.default_url = default_url
        self.button_title = button_title
        self._clock = clock
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        # One refresh per credential at a time: with rotation, two racing refreshes
        # could leave the store holding a refresh token Kakao already replaced.
        # Weak values: a lock lives only while some send holds or awaits it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def template(self, message: Message) -> dict[str, Any]:
        """A "text" template: at most 200 characters, subject first, with one link."""
        title, body, url = push_parts(message, self.default_url)
        text = f"{title}\n{body}" if title and body and body != title else title or body
        if len(text) > TEXT_LIMIT:
            text = text[: TEXT_LIMIT - 1] + "…"
        template: dict[str, Any] = {
            "object_type": "text",
            "text": text,
            "link": {"web_url": url, "mobile_web_url": url} if url else {},
        }
        if url and self.button_title:
            template["button_title"] = self.button_title
        return template

    async def send(self, message: Message) -> DeliveryResult:
        tokens = await self.token_store.load(message.recipient)
        if tokens is None:
            return PermanentFailure(f"Kakao is not connected: {RECONNECT}")
        form = {"template_object": json.dumps(self.template(message), ensure_ascii=False)}
        refreshed = False
        try:
            if tokens.expires_at - EXPIRY_MARGIN <= self._clock():
                tokens = await self._refresh(message.recipient, tokens)
                refreshed = True
            response = await self._post_memo(tokens, form)
            if response.status_code == 401 and _code(response) in (-401, None) and not refreshed:
                log.info("Kakao access token refused for %s; refreshing", message.recipient)
                tokens = await self._refresh(message.recipient, tokens)
                response = await self._post_memo(tokens, form)
        except _Stop as stop:
            return stop.outcome
        return self._outcome(response, tokens)

    async def _post_memo(self, tokens: KakaoTokens, form: dict[str, str]) -> httpx.Response:
        try:
            return await self._client.post(
                f"{self.api_base}{MEMO_PATH}",
                data=form,
                headers={"Authorization": f"Bearer {tokens.access_token}"},
                timeout=self.timeout,
            )
        except httpx.TimeoutException:
            raise _Stop(Retryable("Kakao API timed out")) from None
        except httpx.HTTPError as exc:
            raise _Stop(Retryable(f"Kakao API unreachable: {type(exc).__name__}")) from None

    async def _refresh(self, recipient: str, tokens: KakaoTokens) -> KakaoTokens:
        """New tokens from the refresh token, saved before use. Under the per-recipient
        lock, re-read the store first: another send may have refreshed already."""
        lock = self._locks.get(recipient)
        if lock is None:
            lock = self._locks[recipient] = asyncio.Lock()
        async with lock:
            current = await self.token_store.load(recipient) or tokens
            still_valid = current.expires_at - EXPIRY_MARGIN > self._clock()
            if current.access_token != tokens.access_token and still_valid:
                return current
            form = {
                "grant_type": "refresh_token",
                "client_id": self.client_id,
                "refresh_token": current.refresh_token,
            }
            if self._client_secret:
                form["client_secret"] = self._client_secret
            try:
                response = await self._client.post(
                    f"{self.auth_base}{TOKEN_PATH}", data=form, timeout=self.timeout
                )
            except httpx.TimeoutException:
                raise _Stop(Retryable("Kakao token refresh timed out")) from None
            except httpx.HTTPError as exc:
                raise _Stop(
                    Retryable(f"Kakao token refresh unreachable: {type(exc).__name__}")
                ) from None
            body = _json(response)
            access = body.get("access_token")
            if response.status_code == 200 and isinstance(access, str) and access:
                rotated = body.get("refresh_token")
                if not isinstance(rotated, str) or not rotated:
                    rotated = current.refresh_token  # not rotated this time: keep ours
                new = KakaoTokens(
                    access_token=access,
                    refresh_token=rotated,
                    expires_at=self._clock() + timedelta(seconds=int(body.get("expires_in", 0))),
                )
                await self.token_store.save(recipient, new)
                log.info(
                    "Kakao token refreshed for %s (refresh token %s)",
                    recipient,
                    "rotated" if new.refresh_token != current.refresh_token else "kept",
                )
                return new
            raise _Stop(self._refresh_failure(response, body))

    def _refresh_failure(
        self, response: httpx.Response, body: dict[str, Any]
    ) -> Retryable | PermanentFailure:
        # error_description can quote what we sent; only the codes are reported.
        error = str(body.get("error", "")) or f"HTTP {response.status_code}"
        code = str(body.get("error_code", ""))
        label = f"{error} {code}".strip()
        log.warning("Kakao token refresh refused: %s", label)
        if response.status_code == 429 or response.status_code >= 500:
            return Retryable(
                f"Kakao token refresh failed ({label})",
                retry_after_seconds(response.headers.get("retry-after")),
            )
        if error == "invalid_grant":
            return PermanentFailure(
                f"Kakao authorization expired or was revoked ({label}): {RECONNECT}"
            )
        if error == "invalid_client":
            return PermanentFailure(
                f"Kakao refused this server's client id/secret ({label}): "
                "check KAKAO_CLIENT_ID and KAKAO_CLIENT_SECRET"
            )
        return PermanentFailure(f"Kakao token refresh refused ({label}): {RECONNECT}")

    def _outcome(self, response: httpx.Response, tokens: KakaoTokens) -> DeliveryResult:
        status = response.status_code
        body = _json(response)
        code = _code(response)
        msg = _scrub(str(body.get("msg", "")), tokens)
        if status == 200 and body.get("result_code") == 0:
            return Delivered()
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if status == 429 or code == -10:
            return Retryable(f"Kakao API quota exceeded ({code})", retry_after)
        if status >= 500 or code in _TRANSIENT_CODES:
            what = _TRANSIENT_CODES.get(code or 0, "server error")
            return Retryable(f"Kakao API {what} ({status}, {code})", retry_after)
        if status == 401:
            return PermanentFailure(
                f"Kakao refused the refreshed access token ({code}): {RECONNECT}"
            )
        if code == -402:
            return PermanentFailure(
                "Kakao consent for talk_message (sending KakaoTalk messages) is missing (-402): "
                "the user must reconnect Kakao and agree to it"
            )
        if code == -501:
            return PermanentFailure("the Kakao account does not use KakaoTalk (-501)")
        return PermanentFailure(f"Kakao API refused the message ({status}, {code}): {msg}")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _code(response: httpx.Response) -> int | None:
    code = _json(response).get("code")
    return code if isinstance(code, int) else None


def _scrub(text: str, tokens: KakaoTokens) -> str:
    """Kakao messages do not echo tokens today; make sure a future one cannot leak."""
    for secret in (tokens.access_token, tokens.refresh_token):
        if secret:
            text = text.replace(secret, "***")
    return text.replace("\n", " ")[:200]
