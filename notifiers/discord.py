"""Discord through channel webhooks: one embed per alert, rate limited per webhook.

Why it looks the way it does:

* The recipient is a webhook URL a user pasted, and we POST to it from the server.
  Posting a user-supplied URL anywhere is SSRF, so :func:`validate_webhook_url`
  accepts only Discord's own hosts (or the configured ``api_base``, for tests) and
  the exact ``/api/webhooks/<id>/<token>`` path, and :meth:`DiscordNotifier.send`
  validates again before every POST (a stored row may predate a rule change, or
  have been edited). Redirects are never followed.
* The URL holds the webhook's token: whoever has it can post. It never reaches a
  log line or a delivery reason; logs name a webhook by a short hash, and a filter
  on the ``httpx`` logger (which prints request URLs at INFO) redacts the path.
* User text goes into an embed with ``allowed_mentions.parse = []``, so a rule
  named "@everyone" pings nobody. Embed limits (title 256, description 4096)
  are enforced by truncation, never by a 400.
* Discord's rate limits are per webhook bucket and announced in headers. After an
  answer with ``X-RateLimit-Remaining: 0`` the next send to that webhook waits for
  ``X-RateLimit-Reset-After`` instead of collecting a 429; a wait longer than
  ``max_wait`` goes back to the delivery worker as Retryable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from notifiers import redact
from notifiers.base import Delivered, DeliveryResult, Message, PermanentFailure, Retryable
from notifiers.ratelimit import Holdoff, MonotonicClock, Sleep
from notifiers.ratelimit import real_sleep as _real_sleep

__all__ = ["DISCORD_HOSTS", "DiscordNotifier", "validate_webhook_url", "webhook_key"]

log = logging.getLogger(__name__)

DISCORD_HOSTS = frozenset(
    {
        "discord.com",
        "discordapp.com",
        "canary.discord.com",
        "ptb.discord.com",
        "canary.discordapp.com",
        "ptb.discordapp.com",
    }
)
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_URL = 512
DEFAULT_COLOR = 0x3B82F6
_ELLIPSIS = "…"
_GLOBAL = "<global>"
_PRUNE_AT = 1024
_WEBHOOK_PATH = re.compile(r"/api/webhooks/(\d{1,20})/([A-Za-z0-9_-]{1,128})/?")
_NO_TOKEN_PATH = re.compile(r"/api/webhooks/\d{1,20}/?")
_WEBHOOK_IN_TEXT = re.compile(r"/api/webhooks/[^\s\"'?#]*")


def validate_webhook_url(url: str, api_base: str = "https://discord.com") -> str:
    """The canonical form of a Discord webhook URL, or ``ValueError`` saying why not.

    Accepted: ``https://discord.com/api/webhooks/<digits>/<token>`` on discord.com,
    discordapp.com and their canary./ptb. hosts, no port, user info, query or
    fragment; or the same path on the exact scheme and host of ``api_base`` (a
    loopback fake in tests). Error messages never repeat the URL (it is a secret).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("the webhook URL is empty")
    if len(url) > MAX_URL:
        raise ValueError(f"the webhook URL is longer than {MAX_URL} characters")
    if not url.isascii() or any(ch.isspace() or ch < " " or ch in "\\\x7f" for ch in url):
        raise ValueError("the webhook URL contains spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ValueError("the webhook URL is not a valid URL") from None
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    if "@" in netloc:
        raise ValueError("the webhook URL must not contain a user name or password (…@host)")
    base = urlsplit(api_base.strip())
    if (scheme, netloc) != (base.scheme.lower(), base.netloc.lower()):
        if scheme != "https":
            raise ValueError("the webhook URL must start with https://")
        if netloc not in DISCORD_HOSTS:
            raise ValueError("the webhook URL must be on discord.com (or discordapp.com)")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("the webhook URL must not have a query or a fragment")
    match = _WEBHOOK_PATH.fullmatch(parts.path)
    if match is None:
        if _NO_TOKEN_PATH.fullmatch(parts.path):
            raise ValueError("the webhook URL is missing its token (…/webhooks/<id>/<token>)")
        raise ValueError(
            "the webhook URL must look like https://discord.com/api/webhooks/<id>/<token>"
        )
    return f"{scheme}://{netloc}/api/webhooks/{match[1]}/{match[2]}"


def webhook_key(url: str) -> str:
    """A short, stable, non-reversible name for a webhook (bucket key, logs)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]


def _u16(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` UTF-16 units (Discord counts like JavaScript), ellipsis if cut."""
    if _u16(text) <= limit:
        return text
    keep, used = [], 0
    room = limit - _u16(_ELLIPSIS)
    for ch in text:
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > room:
            break
        keep.append(ch)
        used += width
    return "".join(keep).rstrip() + _ELLIPSIS


def _float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class DiscordNotifier:
    """Posts alerts to Discord webhooks. ``Message.recipient`` is the webhook URL."""

    channel = "discord"

    def __init__(
        self,
        api_base: str = "https://discord.com",
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        *,
        color: int = DEFAULT_COLOR,
        max_wait: float = 5.0,
        margin: float = 0.05,
        clock: MonotonicClock = time.monotonic,
        sleep: Sleep = _real_sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.color = color
        # Waits up to this long inside send(); a longer hold goes back to the worker.
        self.max_wait = max_wait
        # Added to Reset-After: the header is rounded and the server's clock is not ours.
        self.margin = margin
        self._client = client
        self._owns_client = client is None
        self._sleep = sleep
        self._now = now
        self._holdoff = Holdoff(clock)
        self._locks: dict[str, asyncio.Lock] = {}
        redact.install(_WEBHOOK_IN_TEXT, "/api/webhooks/<redacted>")

    def __repr__(self) -> str:
        return f"DiscordNotifier(api_base={self.api_base!r})"

    async def __aenter__(self) -> DiscordNotifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) >= _PRUNE_AT:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def build(self, message: Message) -> dict[str, Any] | None:
        """The webhook body, or None when there is nothing to show."""
        embed: dict[str, Any] = {}
        title = _clip(" ".join(message.subject.split()), MAX_TITLE)
        description = _clip(message.text.strip(), MAX_DESCRIPTION)
        if title:
            embed["title"] = title
        if description:
            embed["description"] = description
        if not embed:
            return None
        embed["color"] = self.color
        embed["timestamp"] = self._now().astimezone(UTC).isoformat(timespec="milliseconds")
        return {"content": "", "embeds": [embed], "allowed_mentions": {"parse": []}}

    async def send(self, message: Message) -> DeliveryResult:
        try:
            url = validate_webhook_url(message.recipient.strip(), self.api_base)
        except ValueError as exc:
            return PermanentFailure(f"webhook URL rejected: {exc}")
        payload = self.build(message)
        if payload is None:
            return PermanentFailure("empty message: nothing to send")
        key = webhook_key(url)
        # One request at a time per webhook: each answer's bucket headers decide
        # whether the next one may go now.
        async with self._lock(key):
            wait = max(self._holdoff.remaining(key), self._holdoff.remaining(_GLOBAL))
            if wait > self.max_wait:
                return Retryable("Discord webhook is rate limited", retry_after=wait)
            if wait > 0:
                log.debug("discord webhook %s: waiting %.3f s for its bucket", key, wait)
                await self._sleep(wait)
            try:
                response = await self._http().post(
                    url, params={"wait": "true"}, json=payload, timeout=self.timeout
                )
            except httpx.TimeoutException:
                log.info("discord webhook %s timed out", key)
                return Retryable(f"Discord timed out after {self.timeout:g}s")
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {_redact(str(exc))}"
                log.info("discord webhook %s failed: %s", key, reason)
                return Retryable(reason)
            self._note_bucket(key, response)
            result = self._outcome(response, key)
        log.debug("discord webhook %s (%s): %s", key, message.idempotency_key, result)
        return result

    def _note_bucket(self, key: str, response: httpx.Response) -> None:
        remaining = response.headers.get("x-ratelimit-remaining")
        reset_after = _float(response.headers.get("x-ratelimit-reset-after"))
        if remaining is not None and remaining.strip() == "0" and reset_after is not None:
            self._holdoff.hold(key, reset_after + self.margin)

    def _outcome(self, response: httpx.Response, key: str) -> DeliveryResult:
        status = response.status_code
        body = _json(response)
        code = body.get("code")
        text = _redact(str(body.get("message") or response.reason_phrase or ""))
        label = f"{text} ({code})" if code is not None else text
        if status in (200, 204):
            message_id = body.get("id")
            return Delivered(detail="" if message_id is None else str(message_id))
        if status == 429:
            retry_after = _float(body.get("retry_after"))
            if retry_after is None:
                retry_after = _float(response.headers.get("retry-after"))
            is_global = body.get("global") is True or "x-ratelimit-global" in response.headers
            scope = "global" if is_global else "webhook"
            self._holdoff.hold(_GLOBAL if is_global else key, (retry_after or 1.0) + self.margin)
            log.warning(
                "discord 429 (%s) for webhook %s, retry after %s s", scope, key, retry_after
            )
            return Retryable(f"Discord 429 ({scope}): {label}", retry_after=retry_after)
        if status >= 500:
            return Retryable(f"Discord {status}: {label}")
        if status == 404:  # 10015 Unknown Webhook: deleted, or never existed
            log.info("discord webhook %s is gone (404)", key)
            return PermanentFailure(f"Discord 404: {label}", gone=True)
        return PermanentFailure(f"Discord {status}: {label}")


def _redact(text: str) -> str:
    return _WEBHOOK_IN_TEXT.sub("/api/webhooks/<redacted>", text).replace("\n", " ")[:200]
