"""A loopback fake of the Telegram Bot API, speaking its real protocol.

What it implements, as the Bot API documentation describes the real service:

* ``/bot<token>/<method>`` (GET or POST; parameters as JSON, form or query). A wrong
  token answers 401 ``{"ok":false,"error_code":401,"description":"Unauthorized"}``,
  an unknown method 404 ``Not Found``.
* ``sendMessage``: ``chat_id`` and ``text`` required; ``parse_mode`` must be ``HTML``
  (our notifier never uses anything else) and the text must parse as Telegram-HTML:
  only the tags Telegram knows, properly nested, and only ``&lt; &gt; &amp; &quot;``
  and numeric entities; every other ``<``, ``>`` and ``&`` is a 400 "can't parse
  entities". 1-4096 characters after parsing (UTF-16 units). Every accepted message
  is recorded with its arrival time, and every request's arrival too.
* Server-side rate limits: per chat and global, N in any sliding window, answered
  429 ``Too Many Requests: retry after N`` with ``parameters.retry_after``.
* Switches: the next N answers 429 (with a given retry_after) or 5xx, a delay on
  every answer (longer than a client's timeout), blocked chats (403 "bot was
  blocked by the user"), unknown chats (400 "chat not found").
* ``getMe`` and ``getUpdates`` (with ``offset`` and ``limit``), fed by
  :meth:`TelegramFake.push_start`.

Rate limits and arrival times use real ``time.monotonic()``: they measure the client.
"""

from __future__ import annotations

import asyncio
import html
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import free_port
from tests.loopback import LoopbackServer

TOKEN = "123456789:AAHfakeTokenForLoopbackTests_0123456789"
ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "span",
    "tg-spoiler",
    "tg-emoji",
    "blockquote",
}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d{1,7}|#x[0-9a-fA-F]{1,6});")


class HtmlError(ValueError):
    pass


def parse_telegram_html(text: str) -> str:
    """The visible text of Telegram-HTML, or :class:`HtmlError` like Telegram's 400."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG.match(text, i)
            if m is None:
                raise HtmlError(f"Unexpected character '<' at byte offset {i}")
            closing, name = m.group(1) == "/", m.group(2).lower()
            if name not in ALLOWED_TAGS:
                kind = "end" if closing else "start"
                raise HtmlError(f'Unsupported {kind} tag "{name}" at byte offset {i}')
            if closing:
                if not stack or stack[-1] != name:
                    raise HtmlError(f'Unmatched end tag at byte offset {i}, expected "</{name}>"')
                stack.pop()
            else:
                stack.append(name)
            i = m.end()
        elif ch == "&":
            m = _ENTITY.match(text, i)
            if m is None:
                raise HtmlError(f"Unsupported HTML entity at byte offset {i}")
            out.append(html.unescape(m.group(0)))
            i = m.end()
        elif ch == ">":
            raise HtmlError(f"Unexpected character '>' at byte offset {i}")
        else:
            out.append(ch)
            i += 1
    if stack:
        raise HtmlError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class SentMessage:
    message_id: int
    chat_id: str
    text: str  # as sent (Telegram-HTML)
    visible: str  # after entity parsing
    payload: dict[str, Any]
    at: float  # time.monotonic() when accepted


@dataclass
class Arrival:
    method: str
    chat_id: str
    status: int
    at: float


def _error(status: int, description: str, **parameters: Any) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return JSONResponse(body, status)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most arrivals in any half-open window [t, t + window)."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] - start < window:
            j += 1
        best = max(best, j - i)
    return best


@dataclass
class TelegramFake:
    token: str = TOKEN
    bot_username: str = "tickwatch_test_bot"
    per_chat_limit: int = 1  # messages per chat ...
    per_chat_window: float = 1.0  # ... in any window this long
    global_limit: int = 30
    global_window: float = 1.0
    force_429: int = 0  # answer the next N sendMessage calls 429
    retry_after: int = 3
    force_5xx: int = 0  # answer the next N sendMessage calls with ``status_5xx``
    status_5xx: int = 502
    delay_s: float = 0.0  # every answer waits this long
    blocked: set[str] = field(default_factory=set)  # 403 bot was blocked by the user
    unknown: set[str] = field(default_factory=set)  # 400 chat not found
    # records
    messages: list[SentMessage] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    rejected_429: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._next_message_id = 1
        self._next_update_id = 100

    # --- control and measurement -------------------------------------------------------

    def push_start(self, chat_id: int, code: str, text: str | None = None) -> None:
        """A user pressing Start on ``t.me/<bot>?start=<code>`` (or typing any text)."""
        with self._lock:
            self.updates.append(
                {
                    "update_id": self._next_update_id,
                    "message": {
                        "message_id": self._next_update_id,
                        "from": {"id": chat_id, "is_bot": False, "first_name": "Kim"},
                        "chat": {"id": chat_id, "type": "private", "first_name": "Kim"},
                        "date": int(time.time()),
                        "text": text if text is not None else f"/start {code}",
                    },
                }
            )
            self._next_update_id += 1

    def send_arrivals(self, chat_id: str | None = None) -> list[float]:
        return [
            a.at
            for a in self.arrivals
            if a.method == "sendMessage" and (chat_id is None or a.chat_id == chat_id)
        ]

    # --- protocol ------------------------------------------------------------------------

    async def _params(self, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query_params)
        ctype = request.headers.get("content-type", "")
        if request.method == "POST":
            if ctype.startswith("application/json"):
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError("body is not an object")
                params.update(body)
            elif ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
                params.update(dict(await request.form()))
        return params

    async def dispatch(self, request: Request) -> JSONResponse:
        now = time.monotonic()
        try:
            params = await self._params(request)
        except ValueError:
            return _error(400, "Bad Request: can't parse JSON object")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.path_params["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.path_params["method"]
        handler = {
            "sendMessage": self.send_message,
            "getMe": self.get_me,
            "getUpdates": self.get_updates,
        }.get(method)
        if handler is None:
            return _error(404, "Not Found")
        response = handler(params, now)
        with self._lock:
            self.arrivals.append(
                Arrival(method, str(params.get("chat_id", "")), response.status_code, now)
            )
        return response

    def get_me(self, params: dict[str, Any], now: float) -> JSONResponse:
        return JSONResponse(
            {
                "ok": True,
                "result": {
                    "id": int(self.token.split(":")[0]),
                    "is_bot": True,
                    "first_name": "Tickwatch",
                    "username": self.bot_username,
                    "can_join_groups": True,
                    "can_read_all_group_messages": False,
                    "supports_inline_queries": False,
                },
            }
        )

    def get_updates(self, params: dict[str, Any], now: float) -> JSONResponse:
        offset = int(params.get("offset", 0) or 0)
        limit = max(1, min(100, int(params.get("limit", 100) or 100)))
        with self._lock:
            if offset:  # confirms every update below offset, like Telegram
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            return JSONResponse({"ok": True, "result": list(self.updates[:limit])})

    def _over(self, times: list[float], now: float, limit: int, window: float) -> float | None:
        """Seconds until a place frees up, or None if one is free now."""
        recent = [t for t in times if now - t < window]
        if len(recent) < limit:
            return None
        return window - (now - sorted(recent)[-limit])

    def send_message(self, params: dict[str, Any], now: float) -> JSONResponse:
        chat = params.get("chat_id")
        if chat is None or str(chat).strip() == "":
            return _error(400, "Bad Request: chat_id is empty")
        chat_id = str(chat)
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if params.get("parse_mode") != "HTML":
            return _error(400, "Bad Request: unsupported parse_mode")
        try:
            visible = parse_telegram_html(text)
        except HtmlError as exc:
            return _error(400, f"Bad Request: can't parse entities: {exc}")
        if not visible.strip():
            return _error(400, "Bad Request: message text is empty")
        if utf16_len(visible) > 4096:
            return _error(400, "Bad Request: message is too long")
        with self._lock:
            if self.force_5xx > 0:
                self.force_5xx -= 1
                return _error(self.status_5xx, "Bad Gateway")
            if self.force_429 > 0:
                self.force_429 -= 1
                self.rejected_429 += 1
                return _error(
                    429,
                    f"Too Many Requests: retry after {self.retry_after}",
                    retry_after=self.retry_after,
                )
            if chat_id in self.blocked:
                return _error(403, "Forbidden: bot was blocked by the user")
            if chat_id in self.unknown:
                return _error(400, "Bad Request: chat not found")
            # Stamped under the lock: concurrent handlers reach this point in an order
            # that may differ from their arrival stamps, and the window must not go back.
            now = time.monotonic()
            accepted = [m.at for m in self.messages]
            waits = [
                self._over(
                    [m.at for m in self.messages if m.chat_id == chat_id],
                    now,
                    self.per_chat_limit,
                    self.per_chat_window,
                ),
                self._over(accepted, now, self.global_limit, self.global_window),
            ]
            wait = max((w for w in waits if w is not None), default=None)
            if wait is not None:
                self.rejected_429 += 1
                seconds = max(1, math.ceil(wait))
                return _error(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)
            message_id = self._next_message_id
            self._next_message_id += 1
            self.messages.append(SentMessage(message_id, chat_id, text, visible, params, now))
        return JSONResponse(
            {
                "ok": True,
                "result": {
                    "message_id": message_id,
                    "from": {"id": 123456789, "is_bot": True, "username": self.bot_username},
                    "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id},
                    "date": int(time.time()),
                    "text": visible,
                },
            }
        )

    # --- server --------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/bot{token}/{method}", self.dispatch, methods=["GET", "POST"])]
        )

    def serve(self) -> LoopbackServer:
        server = LoopbackServer(self.app(), "127.0.0.1", free_port(), "telegram-fake")
        server.start()
        return server
