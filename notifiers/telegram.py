"""Telegram through the Bot API: ``sendMessage`` in HTML parse mode, rate limited.

Why it looks the way it does:

* Telegram's HTML mode accepts a handful of tags and four named entities, and
  rejects the whole message ("can't parse entities") on anything else. So we never
  send the e-mail HTML: the subject goes in ``<b>`` and the text is escaped.
* Messages are capped at 4096 characters *after* entity parsing. We count what
  Telegram will show (UTF-16 units, the stricter reading) and truncate between
  characters, escaping each one whole, so an entity like ``&amp;`` is never cut.
* Telegram allows about one message a second per chat and thirty a second per bot;
  past that it answers 429 with ``retry_after``. We stay under both ourselves
  (:mod:`notifiers.ratelimit`), and after a 429 we hold that chat back rather than
  let the next delivery of it hit the server again.
* The bot token sits in the URL path. It must never reach a log line or a delivery
  reason: httpx's own INFO log prints request URLs, so a filter on the ``httpx``
  logger redacts bot tokens, and every reason we build is redacted too.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
import time
from typing import Any

import httpx

from notifiers import redact
from notifiers.base import Delivered, DeliveryResult, Message, PermanentFailure, Retryable
from notifiers.ratelimit import Holdoff, KeyedLimiter, MonotonicClock, Sleep, WindowLimiter
from notifiers.ratelimit import real_sleep as _real_sleep

__all__ = [
    "MAX_TEXT",
    "InvalidBotToken",
    "TelegramError",
    "TelegramNotifier",
    "TelegramUnavailable",
    "render_text",
]

log = logging.getLogger(__name__)

MAX_TEXT = 4096  # Bot API: 1-4096 characters after entities parsing
MAX_SUBJECT = 256  # our own cap, so a long subject never crowds out the text
_ELLIPSIS = "…"
_TOKEN_FORM = re.compile(r"\d{1,20}:[A-Za-z0-9_-]{20,128}")
_BOT_IN_URL = re.compile(r"bot\d{1,20}:[A-Za-z0-9_-]+")
_CHAT_FORM = re.compile(r"-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31}")
_START_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # Telegram's deep-link payload alphabet
_RETRY_IN_TEXT = re.compile(r"retry after (\d+(?:\.\d+)?)", re.IGNORECASE)
# 400 descriptions that mean the chat is gone for this bot, not that the message was bad.
_GONE_400 = ("chat not found", "user not found", "group chat was deactivated", "peer_id_invalid")


class TelegramError(Exception):
    """A Bot API call other than sendMessage failed (its message holds no token)."""


class InvalidBotToken(TelegramError):
    """Telegram does not know this bot token (401/404), or it is not a token at all."""


class TelegramUnavailable(TelegramError):
    """Telegram could not be reached or answered with a server error: try again later."""


def _u16(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units: an emoji outside the BMP is 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


def _fit(text: str, budget: int) -> str:
    """Escaped ``text`` whose *visible* length is at most ``budget``, with an ellipsis
    when cut. Escaping char by char means an entity is either whole or absent."""
    if _u16(text) <= budget:
        return _escape(text)
    if budget <= 0:
        return ""
    keep, used = [], 0
    room = budget - _u16(_ELLIPSIS)
    for ch in text:
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > room:
            break
        keep.append(ch)
        used += width
    return _escape("".join(keep).rstrip()) + _ELLIPSIS


def render_text(subject: str, text: str, limit: int = MAX_TEXT) -> str:
    """The Telegram-HTML body: ``<b>subject</b>`` on the first line, then the text,
    both escaped, at most ``limit`` visible characters in all."""
    subject = " ".join(subject.split())  # one line: a newline would end the bold head
    text = text.strip()
    head = _fit(subject, min(MAX_SUBJECT, limit)) if subject else ""
    head_len = _u16(html.unescape(head))
    if not text:
        return f"<b>{head}</b>" if head else ""
    if not head:
        return _fit(text, limit)
    return f"<b>{head}</b>\n{_fit(text, limit - head_len - 1)}"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(body: dict[str, Any], response: httpx.Response) -> float | None:
    """Seconds from ``parameters.retry_after``, else ``Retry-After``, else the text."""
    params = body.get("parameters")
    candidates: list[object] = []
    if isinstance(params, dict):
        candidates.append(params.get("retry_after"))
    candidates.append(response.headers.get("retry-after"))
    match = _RETRY_IN_TEXT.search(str(body.get("description", "")))
    candidates.append(match.group(1) if match else None)
    for value in candidates:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return seconds
    return None


def _mask(chat: str) -> str:
    return f"…{chat[-4:]}"


class TelegramNotifier:
    """Sends alerts to Telegram chats as one bot. ``Message.recipient`` is the chat id."""

    channel = "telegram"

    def __init__(
        self,
        bot_token: str,
        api_base: str = "https://api.telegram.org",
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        per_chat_per_s: float = 1.0,
        global_per_s: float = 30.0,
        *,
        max_wait: float = 5.0,
        clock: MonotonicClock = time.monotonic,
        sleep: Sleep = _real_sleep,
    ) -> None:
        self._token = bot_token.strip()
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        # Waits up to this long inside send(); a longer hold goes back to the worker.
        self.max_wait = max_wait
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._sleep = sleep
        self._per_chat = KeyedLimiter(per_chat_per_s, clock=clock, sleep=sleep)
        self._global = WindowLimiter(global_per_s, clock=clock, sleep=sleep)
        self._holdoff = Holdoff(clock)
        redact.install(_BOT_IN_URL, "bot<redacted>")

    def __repr__(self) -> str:  # never the token
        return f"TelegramNotifier(api_base={self.api_base!r})"

    @property
    def token_ok(self) -> bool:
        return _TOKEN_FORM.fullmatch(self._token) is not None

    async def __aenter__(self) -> TelegramNotifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, inside the running loop that will use it.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    def _url(self, method: str) -> str:
        return f"{self.api_base}/bot{self._token}/{method}"

    def _redact(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, "<redacted>")
        return _BOT_IN_URL.sub("bot<redacted>", text).replace("\n", " ")[:200]

    # --- sending -------------------------------------------------------------------

    async def send(self, message: Message) -> DeliveryResult:
        if not self.token_ok:
            return PermanentFailure("Telegram bot token is missing or malformed")
        chat = message.recipient.strip()
        if not _CHAT_FORM.fullmatch(chat):
            return PermanentFailure("not a Telegram chat id")
        text = render_text(message.subject, message.text)
        if not text:
            return PermanentFailure("empty message: nothing to send")
        wait = self._holdoff.remaining(chat)
        if wait > self.max_wait:
            return Retryable("chat is rate limited by Telegram", retry_after=wait)
        if wait > 0:
            await self._sleep(wait)
        payload = {
            "chat_id": int(chat) if chat.lstrip("-").isdigit() else chat,
            "text": text,
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }
        async with self._per_chat.get(chat).slot(), self._global.slot():
            try:
                response = await self._http().post(
                    self._url("sendMessage"), json=payload, timeout=self.timeout
                )
            except httpx.TimeoutException:
                log.info("telegram send to chat %s timed out", _mask(chat))
                return Retryable(f"Telegram timed out after {self.timeout:g}s")
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {self._redact(str(exc))}"
                log.info("telegram send to chat %s failed: %s", _mask(chat), reason)
                return Retryable(reason)
        result = self._outcome(response, chat)
        log.debug("telegram send to chat %s (%s): %s", _mask(chat), message.idempotency_key, result)
        return result

    def _outcome(self, response: httpx.Response, chat: str) -> DeliveryResult:
        status = response.status_code
        body = _json(response)
        desc = self._redact(str(body.get("description") or response.reason_phrase or ""))
        if status == 200 and body.get("ok") is True:
            result = body.get("result")
            message_id = result.get("message_id") if isinstance(result, dict) else None
            return Delivered(detail="" if message_id is None else str(message_id))
        if status == 200:
            return Retryable("Telegram answered 200 without ok=true")
        if status == 429:
            retry_after = _retry_after(body, response)
            self._holdoff.hold(chat, retry_after if retry_after is not None else 1.0)
            log.warning("telegram 429 for chat %s, retry after %s s", _mask(chat), retry_after)
            return Retryable(f"Telegram 429: {desc}", retry_after=retry_after)
        if status >= 500:
            return Retryable(f"Telegram {status}: {desc}")
        if status == 401:
            log.error("telegram rejected the bot token (401)")
            return PermanentFailure("Telegram rejected the bot token (401 Unauthorized)")
        if status == 403:  # blocked by the user, kicked from the group, user deactivated
            return PermanentFailure(f"Telegram 403: {desc}", gone=True)
        if status == 400:
            params = body.get("parameters")
            if isinstance(params, dict) and params.get("migrate_to_chat_id") is not None:
                new_id = params["migrate_to_chat_id"]
                return PermanentFailure(f"chat moved to supergroup {new_id}", gone=True)
            gone = any(marker in desc.lower() for marker in _GONE_400)
            return PermanentFailure(f"Telegram 400: {desc}", gone=gone)
        if status == 404:
            return PermanentFailure(f"Telegram 404: {desc} (wrong bot token or API base)")
        return PermanentFailure(f"Telegram {status}: {desc}")

    # --- setup helpers (channels page) ---------------------------------------------

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        """One Bot API call's ``result``, or a :class:`TelegramError` without the token."""
        if not self.token_ok:
            raise InvalidBotToken("the Telegram bot token is missing or not of the form id:secret")
        try:
            response = await self._http().post(self._url(method), json=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise TelegramUnavailable(
                f"Telegram {method} failed: {type(exc).__name__}: {self._redact(str(exc))}"
            ) from None
        body = _json(response)
        desc = self._redact(str(body.get("description") or response.reason_phrase or ""))
        if response.status_code in (401, 404):
            raise InvalidBotToken(
                f"Telegram does not accept this bot token ({response.status_code} {desc})"
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise TelegramUnavailable(f"Telegram {method}: {response.status_code} {desc}")
        if response.status_code != 200 or body.get("ok") is not True:
            raise TelegramError(f"Telegram {method}: {response.status_code} {desc}")
        return body.get("result")

    async def verify_token(self) -> str:
        """The bot's username, proving the token works (the channels page's check)."""
        result = await self._call("getMe", {})
        username = result.get("username") if isinstance(result, dict) else None
        if not isinstance(username, str) or not username:
            raise TelegramError("Telegram getMe answered without a username")
        return username

    async def updates_with_code(self, code: str) -> str | None:
        """The chat that sent ``/start <code>`` (a one-time linking code), or None.

        Updates are read without confirming them (no ``offset``): other codes may be
        waiting for other users, and confirming would drop them. Telegram keeps
        unconfirmed updates for 24 hours and returns at most 100 per call.
        """
        if not _START_CODE.fullmatch(code):
            raise ValueError("a linking code is 1-64 characters of A-Z, a-z, 0-9, _ and -")
        result = await self._call(
            "getUpdates", {"allowed_updates": ["message"], "timeout": 0, "limit": 100}
        )
        if not isinstance(result, list):
            raise TelegramError("Telegram getUpdates answered without a list")
        for update in reversed(result):  # newest first
            message = update.get("message") if isinstance(update, dict) else None
            if not isinstance(message, dict):
                continue
            parts = str(message.get("text") or "").split()
            if len(parts) != 2 or parts[0].split("@", 1)[0] != "/start":
                continue
            chat = message.get("chat")
            same = _START_CODE.fullmatch(parts[1]) and secrets.compare_digest(parts[1], code)
            if same and isinstance(chat, dict):
                chat_id = chat.get("id")
                if isinstance(chat_id, int):
                    return str(chat_id)
        return None
