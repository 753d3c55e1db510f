"""A loopback fake of Discord's webhook execution endpoint, speaking its real protocol.

What it implements, as Discord's developer documentation describes the service:

* ``POST /api/webhooks/{id}/{token}`` (``?wait=true``: 200 with the message object;
  without it: 204). An unknown id answers 404 ``{"message": "Unknown Webhook",
  "code": 10015}``, a wrong token 401 ``{"message": "Invalid Webhook Token",
  "code": 50027}``.
* The body is validated like Discord: content ≤ 2000, ≤ 10 embeds, title ≤ 256,
  description ≤ 4096, all embeds' text ≤ 6000, color 0..0xFFFFFF, ISO 8601
  timestamp (400 ``Invalid Form Body``, code 50035); no content and no embeds is
  400 ``Cannot send an empty message`` (50006).
* A rate-limit bucket per webhook (``limit`` per ``window`` seconds, a fixed window
  from its first request, like Discord's), announced on every answer in
  ``X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket``; past it, 429 with JSON
  ``{"message", "retry_after", "global": false}`` and a ``Retry-After`` header.
* Switches: the next N answers 429 (optionally global, or with only a
  ``Retry-After`` header) or 5xx, a delay on every
  answer (longer than a client's timeout).

Every request's arrival (``time.monotonic()``) and status is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import free_port
from tests.loopback import LoopbackServer


@dataclass
class Posted:
    webhook_id: str
    message_id: str
    payload: dict[str, Any]
    at: float


@dataclass
class Hit:
    webhook_id: str
    status: int
    at: float


@dataclass
class _Bucket:
    remaining: int
    reset_at: float


def _invalid(errors: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"code": 50035, "errors": errors, "message": "Invalid Form Body"}, 400)


def _field_error(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def _u16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def validate_body(body: Any) -> JSONResponse | None:
    """Discord's checks on an execute-webhook body, None when it is acceptable."""
    if not isinstance(body, dict):
        return _invalid({"_errors": [{"code": "DICT_TYPE_CONVERT", "message": "Not a dict"}]})
    content = body.get("content") or ""
    embeds = body.get("embeds") or []
    if not isinstance(content, str) or _u16(content) > 2000:
        return _invalid(
            {"content": _field_error("BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")}
        )
    if not isinstance(embeds, list) or len(embeds) > 10:
        return _invalid({"embeds": _field_error("BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer.")})
    total = 0
    for n, embed in enumerate(embeds):
        if not isinstance(embed, dict):
            return _invalid({"embeds": {str(n): _field_error("DICT_TYPE_CONVERT", "Not a dict")}})
        title, description = embed.get("title", ""), embed.get("description", "")
        if not isinstance(title, str) or _u16(title) > 256:
            err = _field_error("BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
            return _invalid({"embeds": {str(n): {"title": err}}})
        if not isinstance(description, str) or _u16(description) > 4096:
            err = _field_error("BASE_TYPE_MAX_LENGTH", "Must be 4096 or fewer in length.")
            return _invalid({"embeds": {str(n): {"description": err}}})
        color = embed.get("color", 0)
        if not isinstance(color, int) or isinstance(color, bool) or not 0 <= color <= 0xFFFFFF:
            err = _field_error("NUMBER_TYPE_MAX", "int value should be <= 16777215 and >= 0.")
            return _invalid({"embeds": {str(n): {"color": err}}})
        if "timestamp" in embed:
            try:
                datetime.fromisoformat(str(embed["timestamp"]))
            except ValueError:
                err = _field_error("DATE_TIME_TYPE_PARSE", "Could not parse timestamp.")
                return _invalid({"embeds": {str(n): {"timestamp": err}}})
        total += _u16(title) + _u16(description)
    if total > 6000:
        return _invalid(
            {"embeds": _field_error("MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size")}
        )
    if not content and not embeds:
        return JSONResponse({"message": "Cannot send an empty message", "code": 50006}, 400)
    return None


@dataclass
class DiscordFake:
    webhooks: dict[str, str] = field(default_factory=dict)  # id -> token
    limit: int = 5  # requests per webhook bucket ...
    window: float = 2.0  # ... per window this long
    force_429: int = 0  # answer the next N requests 429
    force_429_retry_after: float = 1.5
    force_429_global: bool = False
    force_429_json: bool = True  # False: only the Retry-After header (a Cloudflare-style 429)
    force_5xx: int = 0
    status_5xx: int = 503
    delay_s: float = 0.0
    # records
    posted: list[Posted] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._next_id = 1_200_000_000_000_000_000

    def add_webhook(self, webhook_id: str, token: str) -> None:
        self.webhooks[webhook_id] = token

    def statuses(self) -> list[int]:
        return [h.status for h in self.hits]

    def _headers(self, webhook_id: str, bucket: _Bucket, now: float) -> dict[str, str]:
        reset_after = max(0.0, bucket.reset_at - now)
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            # Rounded up, so a client that waits this long is never early.
            "X-RateLimit-Reset-After": f"{math.ceil(reset_after * 1000) / 1000:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(webhook_id.encode()).hexdigest()[:16],
        }

    async def execute(self, request: Request) -> Response:
        now = time.monotonic()
        webhook_id = request.path_params["webhook_id"]
        response = await self._execute(request, webhook_id, now)
        with self._lock:
            self.hits.append(Hit(webhook_id, response.status_code, now))
        return response

    async def _execute(self, request: Request, webhook_id: str, now: float) -> Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        token = self.webhooks.get(webhook_id)
        if token is None:
            return JSONResponse({"message": "Unknown Webhook", "code": 10015}, 404)
        if request.path_params["token"] != token:
            return JSONResponse({"message": "Invalid Webhook Token", "code": 50027}, 401)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"message": "400: Bad Request", "code": 0}, 400)
        with self._lock:
            if self.force_5xx > 0:
                self.force_5xx -= 1
                return JSONResponse({"message": "Service Unavailable", "code": 0}, self.status_5xx)
            if self.force_429 > 0:
                self.force_429 -= 1
                seconds = self.force_429_retry_after
                headers = {"Retry-After": str(math.ceil(seconds))}
                if self.force_429_global:
                    headers["X-RateLimit-Global"] = "true"
                if not self.force_429_json:
                    return Response("<html>rate limited</html>", 429, headers=headers)
                return JSONResponse(
                    {
                        "message": "You are being rate limited.",
                        "retry_after": seconds,
                        "global": self.force_429_global,
                    },
                    429,
                    headers=headers,
                )
            now = time.monotonic()  # buckets move forward only, whatever order handlers run
            bucket = self._buckets.get(webhook_id)
            if bucket is None or now >= bucket.reset_at:
                bucket = self._buckets[webhook_id] = _Bucket(self.limit, now + self.window)
            headers = self._headers(webhook_id, bucket, now)
            if bucket.remaining <= 0:
                retry_after = math.ceil((bucket.reset_at - now) * 1000) / 1000
                headers["Retry-After"] = str(math.ceil(retry_after))
                headers["X-RateLimit-Scope"] = "user"
                return JSONResponse(
                    {
                        "message": "You are being rate limited.",
                        "retry_after": retry_after,
                        "global": False,
                    },
                    429,
                    headers=headers,
                )
            invalid = validate_body(body)
            if invalid is not None:
                invalid.headers.update(headers)
                return invalid
            bucket.remaining -= 1
            headers = self._headers(webhook_id, bucket, now)
            message_id = str(self._next_id)
            self._next_id += 1
            self.posted.append(Posted(webhook_id, message_id, body, now))
        if request.query_params.get("wait", "").lower() != "true":
            return Response(status_code=204, headers=headers)
        return JSONResponse(
            {
                "id": message_id,
                "type": 0,
                "channel_id": "1100000000000000000",
                "webhook_id": webhook_id,
                "content": body.get("content") or "",
                "embeds": body.get("embeds") or [],
            },
            200,
            headers=headers,
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/webhooks/{webhook_id}/{token}", self.execute, methods=["POST"]),
            ]
        )

    def serve(self) -> LoopbackServer:
        server = LoopbackServer(self.app(), "127.0.0.1", free_port(), "discord-fake")
        server.start()
        return server
