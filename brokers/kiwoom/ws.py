"""Kiwoom realtime trades over one websocket, kept alive across drops.

The protocol (``wss://api.kiwoom.com:10000/api/dostk/websocket``):

1. ``{"trnm": "LOGIN", "token": <access token>}`` first; the server answers
   ``{"trnm": "LOGIN", "return_code": 0, ...}``. Nothing else is accepted before it.
2. ``{"trnm": "REG", "grp_no": "1", "refresh": "1", "data": [{"item": [codes],
   "type": ["0B"]}]}`` adds codes to group 1 (``refresh`` 1 keeps the earlier ones);
   ``REMOVE`` with the same shape takes them out.
3. Trades arrive as ``{"trnm": "REAL", "data": [{"type": "0B", "item": code,
   "values": {"10": price, "15": volume, "20": "HHMMSS", ...}}]}``.
4. The server sends ``{"trnm": "PING"}`` now and then and closes sessions that do
   not send it back; we echo the frame unchanged.

A dropped connection is reopened with jittered exponential backoff; the new
session logs in again (with a fresh token if the old one was refused) and
re-registers every subscribed code, so the tick stream simply continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from brokers.base import AuthExpired, BrokerError
from brokers.kiwoom.auth import TokenManager
from brokers.kiwoom.parsing import (
    REAL_TRADE_TYPE,
    MalformedResponse,
    WsMessage,
    parse_ws_message,
    return_code,
    ticks_from_real,
)
from engines.market import Tick

__all__ = ["KiwoomStream"]

log = logging.getLogger(__name__)

REG_CHUNK = 100
"""Codes per REG/REMOVE frame: Kiwoom documents 100 items per registration request."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Closed:
    """Sentinel that ends :meth:`KiwoomStream.ticks`."""


_CLOSED = _Closed()


class KiwoomStream:
    """The realtime half of the Kiwoom adapter: subscriptions and one merged tick stream.

    ``ticks()`` is meant for a single consumer (the market hub). Ticks are queued
    without ever blocking the reader, because a reader stuck on a slow consumer
    would stop answering PINGs and get the session closed; past ``queue_size`` the
    oldest ticks are dropped (and counted in :attr:`dropped`).
    """

    def __init__(
        self,
        url: str,
        tokens: TokenManager,
        *,
        grp_no: str = "1",
        clock: Callable[[], datetime] = _utc_now,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        login_timeout: float = 10.0,
        open_timeout: float = 10.0,
        queue_size: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self._url = url
        self._tokens = tokens
        self._grp_no = grp_no
        self._clock = clock
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._login_timeout = login_timeout
        self._open_timeout = open_timeout
        self._rng = rng or random.Random()
        self._symbols: set[str] = set()
        self._queue: asyncio.Queue[Tick | _Closed] = asyncio.Queue(maxsize=queue_size)
        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = asyncio.Event()
        self.sessions = 0
        """Successful logins so far: 1 + the number of reconnects."""
        self.dropped = 0

    def __repr__(self) -> str:
        return f"KiwoomStream({self._url!r}, symbols={len(self._symbols)})"

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(self._symbols)

    # -- public ---------------------------------------------------------------------

    async def subscribe(self, symbols: Iterable[str]) -> None:
        new = sorted(set(symbols) - self._symbols)
        if not new:
            return
        self._symbols.update(new)
        self._ensure_running()
        await self._send_items("REG", new)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        gone = sorted(set(symbols) & self._symbols)
        if not gone:
            return
        self._symbols.difference_update(gone)
        await self._send_items("REMOVE", gone)

    async def ticks(self) -> AsyncIterator[Tick]:
        if not self._closed:
            self._ensure_running()
        while True:
            item = await self._queue.get()
            if isinstance(item, _Closed):
                self._queue.put_nowait(item)  # wake any other waiter too
                return
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        while True:  # make room for the sentinel: close must never block
            try:
                self._queue.put_nowait(_CLOSED)
                break
            except asyncio.QueueFull:
                self._queue.get_nowait()

    # -- connection -----------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._closed:
            raise BrokerError("Kiwoom stream is closed")
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="kiwoom-ws")

    def _frames(self, trnm: str, items: list[str]) -> list[str]:
        return [
            json.dumps(
                {
                    "trnm": trnm,
                    "grp_no": self._grp_no,
                    "refresh": "1",
                    "data": [{"item": items[i : i + REG_CHUNK], "type": [REAL_TRADE_TYPE]}],
                }
            )
            for i in range(0, len(items), REG_CHUNK)
        ]

    async def _send_items(self, trnm: str, items: list[str]) -> None:
        """Send REG/REMOVE now if a session is up; otherwise the next login sends the
        whole set, so a failure here only needs logging."""
        ws = self._ws
        if ws is None:
            return
        try:
            async with self._send_lock:
                for frame in self._frames(trnm, items):
                    await ws.send(frame)
        except WebSocketException as exc:
            log.info("kiwoom ws: %s not sent (%s); the reconnect will resend", trnm, exc)

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with connect(
                    self._url, open_timeout=self._open_timeout, max_size=2**22
                ) as ws:
                    await self._login(ws)
                    attempt = 0
                    self.sessions += 1
                    self._ws = ws
                    if self._symbols:
                        await self._send_items("REG", sorted(self._symbols))
                    self.connected.set()
                    count = len(self._symbols)
                    log.info("kiwoom ws: session %d up, %d codes", self.sessions, count)
                    async for raw in ws:
                        await self._handle(ws, raw)
                    log.info("kiwoom ws: server closed the session")
            except (OSError, TimeoutError, WebSocketException, BrokerError) as exc:
                log.warning("kiwoom ws: connection lost: %s: %s", type(exc).__name__, exc)
            except Exception:
                # A bug must not end the stream for good: the hub keeps one iterator for
                # the adapter's lifetime, so log loudly and reconnect like after a drop.
                log.exception("kiwoom ws: unexpected error; reconnecting")
            finally:
                self._ws = None
                self.connected.clear()
            if self._closed:
                return
            attempt += 1
            delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.0))

    async def _login(self, ws: ClientConnection) -> None:
        token = await self._tokens.token()
        await ws.send(json.dumps({"trnm": "LOGIN", "token": token.value}))
        async with asyncio.timeout(self._login_timeout):
            while True:
                raw = await ws.recv()
                try:
                    message = parse_ws_message(raw)
                except MalformedResponse:
                    continue
                if message.trnm == "PING":
                    await ws.send(raw)
                    continue
                if message.trnm != "LOGIN":
                    continue
                code, msg = return_code(message.body)
                if code != 0:
                    # Almost always a stale token: drop it so the retry issues a new one.
                    await self._tokens.invalidate(token)
                    raise AuthExpired(f"websocket login refused: {code} {msg}".strip())
                return

    async def _handle(self, ws: ClientConnection, raw: str | bytes) -> None:
        try:
            message = parse_ws_message(raw)
        except MalformedResponse:
            return  # already logged with its reason
        if message.trnm == "REAL":
            self._deliver(message)
        elif message.trnm == "PING":
            async with self._send_lock:
                await ws.send(raw)
        elif message.trnm in ("REG", "REMOVE"):
            self._check_reply(message)
        else:
            log.info("kiwoom ws: %s message: %s", message.trnm, _summary(message.body))

    def _check_reply(self, message: WsMessage) -> None:
        try:
            code, msg = return_code(message.body)
        except MalformedResponse:
            return
        if code != 0:
            log.warning("kiwoom ws: %s refused: %s %s", message.trnm, code, msg)

    def _deliver(self, message: WsMessage) -> None:
        try:
            ticks = ticks_from_real(message, self._clock())
        except MalformedResponse:
            return
        for tick in ticks:
            if tick.symbol not in self._symbols:
                continue  # a frame in flight for a code we just removed
            try:
                self._queue.put_nowait(tick)
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self._queue.put_nowait(tick)
                self.dropped += 1
                if self.dropped % 1000 == 1:
                    log.warning("kiwoom ws: consumer too slow, %d ticks dropped", self.dropped)


def _summary(body: Any) -> str:
    """A short, secret-free description of an unexpected message for the log."""
    if not isinstance(body, dict):
        return type(body).__name__
    keys = sorted(k for k in body if isinstance(k, str))[:8]
    return f"keys={keys}"
