"""A loopback fake of the Kiwoom REST API and its websocket, speaking Kiwoom's protocol.

REST (Starlette on 127.0.0.1, in a thread through :class:`LoopbackServer`):

* ``POST /oauth2/token`` ``{grant_type, appkey, secretkey}`` -> ``{token, token_type,
  expires_dt, return_code, return_msg}``; every issue is counted.
* Every other call is a ``POST`` that must carry ``api-id`` (matching its path) and
  ``authorization: Bearer <live token>``, like Kiwoom; otherwise it answers with
  Kiwoom's envelope and a non-zero ``return_code`` (8005 for a dead token).
* ka10001 quote, ka10081 daily chart and kt00004 balance, the last two paged through
  ``cont-yn``/``next-key`` headers; kt10000..kt10003 orders, validated field by field
  and recorded.
* ``return_code`` 1700 past ``rate_limit`` requests in any sliding second; every
  arrival time is recorded so tests can measure the client.

Websocket (:class:`KiwoomWsFake`, a ``websockets`` server on the test's own event
loop): LOGIN must come first (a REG before it is refused and the session closed),
REG/REMOVE maintain the session's items, REAL frames are sent from a tick tape,
PING is sent on demand and its echo recorded, and sessions can be dropped.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from engines.market import KST, is_on_tick
from tests.conftest import free_port
from tests.loopback import LoopbackServer

OK_MSG = "정상적으로 처리되었습니다"
RATE_MSG = "허용된 요청 개수를 초과하였습니다. API ID=%s"
TOKEN_MSG = "Token이 유효하지 않습니다"
NO_FUNDS_MSG = "[2000](RC4025:주문가능금액을 초과합니다)"
API_PATHS = {
    "ka10001": "/api/dostk/stkinfo",
    "ka10081": "/api/dostk/chart",
    "kt00004": "/api/dostk/acnt",
    "kt10000": "/api/dostk/ordr",
    "kt10001": "/api/dostk/ordr",
    "kt10002": "/api/dostk/ordr",
    "kt10003": "/api/dostk/ordr",
}


def envelope(code: int, msg: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "return_code": code, "return_msg": msg}


@dataclass
class Seen:
    """One request as the fake received it."""

    path: str
    api_id: str
    headers: dict[str, str]
    body: Any
    at: float
    code: int = 0


@dataclass
class KiwoomFake:
    app_keys: dict[str, str] = field(default_factory=dict)  # appkey -> secretkey
    rate_limit: int | None = None  # requests per sliding second, None = unlimited
    token_ttl: timedelta = timedelta(hours=24)
    quotes: dict[str, dict[str, str]] = field(default_factory=dict)  # code -> ka10001 fields
    daily: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # newest first
    chart_page_size: int = 100
    cash: int = 0
    holdings: list[dict[str, str]] = field(default_factory=list)  # kt00004 rows
    balance_page_size: int = 2
    # switches
    down: bool = False  # 503 on everything
    garbage: bool = False  # 200 with a body that is not JSON
    always_rate_limited: bool = False
    refuse_all_tokens: bool = False  # 8005 for every token, fresh ones too
    # records
    token_issues: list[str] = field(default_factory=list)
    live_tokens: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    orders: dict[str, dict[str, str]] = field(default_factory=dict)  # ord_no -> body
    _next_order: int = 1
    _window: list[float] = field(default_factory=list)

    # -- helpers for tests ----------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every token issued so far stops working, as after Kiwoom's daily expiry."""
        self.live_tokens.clear()

    def calls(self, api_id: str) -> list[Seen]:
        return [s for s in self.seen if s.api_id == api_id]

    def rate_limited(self) -> int:
        return sum(1 for s in self.seen if s.code == 1700)

    def max_per_window(self, window: float = 1.0) -> int:
        """The most requests that arrived within any ``window`` seconds."""
        times = sorted(self.arrivals)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # -- plumbing -------------------------------------------------------------------

    def _throttled(self, now: float) -> bool:
        if self.always_rate_limited:
            return True
        if self.rate_limit is None:
            return False
        self._window = [t for t in self._window if now - t < 1.0]
        if len(self._window) >= self.rate_limit:
            return True
        self._window.append(now)
        return False

    async def _read(self, request: Request, api_id: str) -> tuple[Seen, Any]:
        now = time.monotonic()
        self.arrivals.append(now)
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        seen = Seen(request.url.path, api_id, dict(request.headers), body, now)
        self.seen.append(seen)
        return seen, body

    def _reply(self, seen: Seen, payload: dict[str, Any], headers: dict[str, str] | None = None):
        seen.code = payload["return_code"]
        return JSONResponse(payload, headers=headers)

    async def token(self, request: Request) -> Response:
        seen, body = await self._read(request, "au10001")
        if self.down:
            return PlainTextResponse("service unavailable", 503)
        if self._throttled(seen.at):
            return self._reply(seen, envelope(1700, RATE_MSG % "au10001"))
        if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
            return self._reply(seen, envelope(1511, "필수 입력 값에 값이 존재하지 않습니다"))
        key, secret = body.get("appkey"), body.get("secretkey")
        if not key or self.app_keys.get(key) != secret:
            return self._reply(seen, envelope(8001, "App Key와 Secret Key 검증에 실패했습니다"))
        self.token_issues.append(key)
        value = secrets.token_urlsafe(48)
        self.live_tokens.add(value)
        expires = (datetime.now(KST) + self.token_ttl).strftime("%Y%m%d%H%M%S")
        return self._reply(
            seen, envelope(0, OK_MSG, expires_dt=expires, token_type="bearer", token=value)
        )

    async def api(self, request: Request) -> Response:
        api_id = request.headers.get("api-id", "")
        seen, body = await self._read(request, api_id)
        if self.down:
            return PlainTextResponse("service unavailable", 503)
        if self.garbage:
            return PlainTextResponse("<html>maintenance</html>", 200)
        if API_PATHS.get(api_id) != request.url.path:
            return self._reply(seen, envelope(1504, "해당 URI에서는 지원하는 API ID가 아닙니다"))
        auth = request.headers.get("authorization", "")
        if (
            self.refuse_all_tokens
            or not auth.startswith("Bearer ")
            or auth[7:] not in self.live_tokens
        ):
            return self._reply(seen, envelope(8005, TOKEN_MSG))
        if "application/json" not in request.headers.get("content-type", ""):
            return self._reply(seen, envelope(1511, "content-type"))
        if self._throttled(seen.at):
            return self._reply(seen, envelope(1700, RATE_MSG % api_id))
        if not isinstance(body, dict):
            return self._reply(seen, envelope(1511, "필수 입력 값에 값이 존재하지 않습니다"))
        cont = request.headers.get("cont-yn", "N")
        key = request.headers.get("next-key", "")
        if (cont == "Y") != bool(key):
            return self._reply(seen, envelope(1511, "cont-yn/next-key"))
        handler = {
            "ka10001": self._quote,
            "ka10081": self._chart,
            "kt00004": self._balance,
        }.get(api_id, self._order)
        payload, headers = handler(api_id, body, key)
        return self._reply(seen, payload, headers)

    def _quote(self, api_id: str, body: dict, key: str) -> tuple[dict, dict | None]:
        code = body.get("stk_cd", "")
        fields = self.quotes.get(code)
        if fields is None:  # Kiwoom answers unknown codes with blanks
            return envelope(0, OK_MSG, stk_cd=code, stk_nm="", cur_prc=""), None
        return envelope(0, OK_MSG, stk_cd=code, **fields), None

    @staticmethod
    def _offset(key: str, prefix: str) -> int:
        if not key:
            return 0
        return int(key.removeprefix(prefix))

    def _chart(self, api_id: str, body: dict, key: str) -> tuple[dict, dict | None]:
        code, base = body.get("stk_cd", ""), body.get("base_dt", "")
        if body.get("upd_stkpc_tp") not in ("0", "1") or len(base) != 8:
            return envelope(1511, "필수 입력 값에 값이 존재하지 않습니다"), None
        rows = [r for r in self.daily.get(code, []) if r["dt"] <= base]
        start = self._offset(key, f"chart-{code}-")
        page = rows[start : start + self.chart_page_size]
        end = start + len(page)
        more = end < len(rows)
        headers = {
            "cont-yn": "Y" if more else "N",
            "next-key": f"chart-{code}-{end}" if more else "",
        }
        return envelope(0, OK_MSG, stk_cd=code, stk_dt_pole_chart_qry=page), headers

    def _balance(self, api_id: str, body: dict, key: str) -> tuple[dict, dict | None]:
        if body.get("qry_tp") not in ("0", "1") or body.get("dmst_stex_tp") != "KRX":
            return envelope(1511, "필수 입력 값에 값이 존재하지 않습니다"), None
        start = self._offset(key, "acnt-")
        page = self.holdings[start : start + self.balance_page_size]
        end = start + len(page)
        more = end < len(self.holdings)
        headers = {"cont-yn": "Y" if more else "N", "next-key": f"acnt-{end}" if more else ""}
        summary = {"acnt_nm": "테스트", "entr": f"{self.cash:015d}", "d2_entra": str(self.cash)}
        return envelope(0, OK_MSG, **summary, stk_acnt_evlt_prst=page), headers

    def _order(self, api_id: str, body: dict, key: str) -> tuple[dict, dict | None]:
        def bad(msg: str) -> tuple[dict, None]:
            return envelope(20, msg), None

        if body.get("dmst_stex_tp") not in ("KRX", "NXT", "SOR"):
            return bad("[1511](dmst_stex_tp)")
        code = body.get("stk_cd", "")
        if code not in self.quotes:
            return bad("[2000](RC4002:종목코드가 없습니다)")
        if api_id in ("kt10002", "kt10003"):
            orig = self.orders.get(body.get("orig_ord_no", ""))
            if orig is None or orig["stk_cd"] != code:
                return bad("[2000](RC4100:원주문번호가 없습니다)")
            qty_field = "mdfy_qty" if api_id == "kt10002" else "cncl_qty"
            if not str(body.get(qty_field, "")).isdigit():
                return bad(f"[1511]({qty_field})")
            if api_id == "kt10002" and not (
                str(body.get("mdfy_uv", "")).isdigit() and is_on_tick(int(body["mdfy_uv"]))
            ):
                return bad("[2000](RC4010:호가단위가 맞지 않습니다)")
            return self._accept(body, orig_no=body["orig_ord_no"])
        qty, price, trde_tp = body.get("ord_qty", ""), body.get("ord_uv"), body.get("trde_tp")
        if not (isinstance(qty, str) and qty.isdigit() and int(qty) > 0):
            return bad("[1511](ord_qty)")
        if trde_tp == "0":
            if not (isinstance(price, str) and price.isdigit() and is_on_tick(int(price))):
                return bad("[2000](RC4010:호가단위가 맞지 않습니다)")
            unit = int(price)
        elif trde_tp == "3":
            if price not in ("", None):
                return bad("[2000](RC4011:시장가 주문은 단가를 입력하지 않습니다)")
            unit = abs(int(self.quotes[code]["cur_prc"]))
        else:
            return bad("[1511](trde_tp)")
        if api_id == "kt10000" and int(qty) * unit > self.cash:
            return bad(NO_FUNDS_MSG)
        return self._accept(body)

    def _accept(self, body: dict, orig_no: str = "") -> tuple[dict, None]:
        number = f"{self._next_order:07d}"
        self._next_order += 1
        self.orders[number] = dict(body)
        extra = {"base_orig_ord_no": orig_no} if orig_no else {}
        return envelope(0, OK_MSG, ord_no=number, dmst_stex_tp=body["dmst_stex_tp"], **extra), None

    def serve(self) -> LoopbackServer:
        app = Starlette(
            routes=[
                Route("/oauth2/token", self.token, methods=["POST"]),
                Route("/api/dostk/{tr:str}", self.api, methods=["POST"]),
            ]
        )
        server = LoopbackServer(app, "127.0.0.1", free_port(), "kiwoom-fake")
        server.start()
        return server


# -- websocket --------------------------------------------------------------------------


@dataclass
class WsSession:
    number: int
    conn: ServerConnection
    logged_in: bool = False
    items: set[str] = field(default_factory=set)


@dataclass
class KiwoomWsFake:
    """The realtime server. ``rest`` supplies the live tokens LOGIN is checked against."""

    rest: KiwoomFake
    ignore_remove: bool = False  # keep sending REMOVEd items, like frames already in flight
    sessions: list[WsSession] = field(default_factory=list)  # open ones
    opened: int = 0
    logins: list[str] = field(default_factory=list)  # tokens of successful LOGINs
    refused_logins: int = 0
    messages: list[tuple[int, dict]] = field(default_factory=list)  # (session, frame) received
    protocol_errors: list[str] = field(default_factory=list)
    pings_sent: list[str] = field(default_factory=list)
    echoes: list[str] = field(default_factory=list)
    url: str = ""

    def registrations(self, session: int) -> list[dict]:
        return [m for n, m in self.messages if n == session and m.get("trnm") in ("REG", "REMOVE")]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[KiwoomWsFake]:
        port = free_port()
        async with serve(self._handler, "127.0.0.1", port, ping_interval=None):
            self.url = f"ws://127.0.0.1:{port}/api/dostk/websocket"
            try:
                yield self
            finally:
                await self.drop()

    async def _handler(self, conn: ServerConnection) -> None:
        self.opened += 1
        session = WsSession(self.opened, conn)
        self.sessions.append(session)
        try:
            async for raw in conn:
                await self._on_message(session, raw)
        except ConnectionClosed:
            pass
        finally:
            if session in self.sessions:
                self.sessions.remove(session)

    async def _on_message(self, session: WsSession, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            self.protocol_errors.append("not JSON")
            await session.conn.close(1003, "bad frame")
            return
        self.messages.append((session.number, msg))
        trnm = msg.get("trnm")
        if trnm == "PING":
            self.echoes.append(raw if isinstance(raw, str) else raw.decode())
            return
        if trnm == "LOGIN":
            token = msg.get("token")
            if token in self.rest.live_tokens:
                session.logged_in = True
                self.logins.append(token)
                await session.conn.send(json.dumps(envelope(0, "", trnm="LOGIN")))
            else:
                self.refused_logins += 1
                await session.conn.send(json.dumps(envelope(100013, TOKEN_MSG, trnm="LOGIN")))
                await session.conn.close(1008, "login failed")
            return
        if not session.logged_in:
            self.protocol_errors.append(f"{trnm} before LOGIN")
            await session.conn.send(json.dumps(envelope(100001, "로그인 필요", trnm=trnm)))
            await session.conn.close(1008, "login required")
            return
        if trnm in ("REG", "REMOVE"):
            items = self._items(msg)
            if items is None:
                self.protocol_errors.append(f"bad {trnm}")
                await session.conn.send(json.dumps(envelope(105111, "형식 오류", trnm=trnm)))
                return
            if trnm == "REG":
                session.items.update(items)
            elif not self.ignore_remove:
                session.items.difference_update(items)
            await session.conn.send(json.dumps(envelope(0, "", trnm=trnm)))
            return
        self.protocol_errors.append(f"unknown trnm {trnm!r}")

    @staticmethod
    def _items(msg: dict) -> list[str] | None:
        if msg.get("grp_no") in (None, "") or msg.get("refresh") not in ("0", "1"):
            return None
        data = msg.get("data")
        if not isinstance(data, list) or not data:
            return None
        items: list[str] = []
        for entry in data:
            if not isinstance(entry, dict) or entry.get("type") != ["0B"]:
                return None
            codes = entry.get("item")
            if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
                return None
            items.extend(codes)
        return items

    async def push(self, tape: Iterable[tuple[str, dict[str, str]]]) -> int:
        """Send each (code, values) of ``tape`` as a REAL frame to every logged-in session
        that registered the code. Returns the number of frames sent."""
        sent = 0
        for code, values in tape:
            frame = json.dumps(
                {
                    "trnm": "REAL",
                    "data": [{"type": "0B", "name": "주식체결", "item": code, "values": values}],
                }
            )
            for session in list(self.sessions):
                if session.logged_in and code in session.items:
                    try:
                        await session.conn.send(frame)
                        sent += 1
                    except ConnectionClosed:
                        pass
        return sent

    async def ping(self) -> None:
        frame = json.dumps({"trnm": "PING"})
        for session in list(self.sessions):
            if session.logged_in:
                self.pings_sent.append(frame)
                await session.conn.send(frame)

    async def drop(self) -> None:
        """Close every open session from the server side."""
        for session in list(self.sessions):
            await session.conn.close(1011, "server going away")
        for _ in range(100):
            if not self.sessions:
                return
            await asyncio.sleep(0.01)
