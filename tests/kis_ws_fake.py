"""A loopback fake of the KIS realtime websocket, speaking its real protocol.

A real ``websockets`` server on 127.0.0.1 (run in the test's event loop) plus a
companion HTTP server (``POST /oauth2/Approval``, in a thread like ``KisFake``) that
issues the approval keys the websocket accepts. What it does, as the shared
reference describes KIS:

* subscribe / unsubscribe JSON with the approval key; replies with ``msg_cd``
  OPSP0000 / 0001 / 0002 / 0003, OPSP0011 for an unknown (or revoked) approval
  key, OPSP8996 when another live session holds the same app key (one session per
  app key; ``in_use_after_drop`` answers it for N more attempts after a drop, as
  KIS does while it still remembers the dead connection), and an over-limit reply
  beyond ``max_subscriptions`` (``over_limit_reply``: ``OPSP0008`` / "MAX SUBSCRIBE
  OVER" by default; configurable because the code is unconfirmed);
* PINGPONG sent periodically (or on demand), echoes recorded; websocket-level
  pings *from the client* are counted (a KIS client must never send them);
* a tick tape replayed as ``0|H0STCNT0|NNN|...`` frames, 1 to 3 records a frame,
  with ``drops`` closing every connection abruptly at chosen tape positions and
  skipping the ticks printed during the outage (they are lost, as on KIS);
* encrypted H0STCNI0 / H0STCNI9 notices with the key/iv given in the subscribe reply.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from engines.market import KST, Tick
from tests.conftest import free_port
from tests.loopback import LoopbackServer

TRADE_FIELDS = 46
NOTICE_FIELDS = 26
NOTICE_TR_IDS = ("H0STCNI0", "H0STCNI9")


# ---- frame builders (also used by the unit tests) ------------------------------------------


def trade_record(
    tick: Tick, *, with_date: bool = True, extra: int = 0, ask_bid: tuple[int, int] | None = None
) -> list[str]:
    """The 46 H0STCNT0 fields of ``tick`` (plus ``extra`` trailing fields)."""
    local = tick.ts.astimezone(KST)
    price = tick.price
    ask, bid = ask_bid or (price + 100, price)
    fields = ["0"] * TRADE_FIELDS
    fields[0] = tick.symbol
    fields[1] = local.strftime("%H%M%S")
    fields[2] = str(price)
    fields[3] = "2"  # PRDY_VRSS_SIGN
    fields[4] = "100"
    fields[5] = "0.14"
    fields[6] = f"{price}.00"
    fields[7] = fields[8] = fields[9] = str(price)
    fields[10], fields[11] = str(ask), str(bid)
    fields[12] = str(tick.volume)
    fields[13] = "1000000"
    fields[21] = "1"  # CCLD_DVSN
    fields[24] = "090000"
    fields[33] = local.strftime("%Y%m%d") if with_date else ""
    fields[34] = "20"
    fields[35] = "N"
    fields[43] = "0"
    fields[44] = "2"
    return fields + [str(k) for k in range(extra)]


def data_frame(tr_id: str, records: Sequence[Sequence[str]], *, enc: str = "0") -> str:
    """``<enc>|<tr_id>|<count>|<payload>``: records' fields run together with ``^``."""
    payload = "^".join("^".join(r) for r in records)
    return f"{enc}|{tr_id}|{len(records):03d}|{payload}"


def notice_fields(
    *,
    order_id: str = "0000012345",
    side: str = "02",
    symbol: str = "005930",
    qty: int = 10,
    price: int = 71000,
    hhmmss: str = "093015",
    cntg_yn: str = "2",
    order_qty: int = 10,
    refused: str = "N",
    n_fields: int = NOTICE_FIELDS,
) -> list[str]:
    """An execution notice record in the 26-field layout (``n_fields`` cuts or pads it)."""
    fields = [
        "HTSUSER1",  # CUST_ID
        "5012345601",  # ACNT_NO
        order_id,  # ODER_NO
        "",  # OODER_NO
        side,  # SELN_BYOV_CLS
        "0",  # RCTF_CLS
        "00",  # ODER_KIND
        "0",  # ODER_COND
        symbol,  # STCK_SHRN_ISCD
        str(qty),  # CNTG_QTY
        str(price),  # CNTG_UNPR
        hhmmss,  # STCK_CNTG_HOUR
        refused,  # RFUS_YN
        cntg_yn,  # CNTG_YN
        "Y",  # ACPT_YN
        "06010",  # BRNC_NO
        str(order_qty),  # ODER_QTY
        "홍길동",  # ACNT_NAME
        "0",  # ORD_COND_PRC
        "1",  # ORD_EXG_GB
        "N",  # POPUP_YN
        "",  # FILLER
        "10",  # CRDT_CLS
        "",  # CRDT_LOAN_DATE
        "삼성전자",  # CNTG_ISNM40
        str(price),  # ODER_PRC
    ]
    if n_fields <= len(fields):
        return fields[:n_fields]
    return fields + ["X"] * (n_fields - len(fields))


def encrypt_notice(plaintext: str, key: str, iv: str) -> str:
    """The real scheme: AES-256-CBC, key/iv = UTF-8 bytes of the strings, PKCS7, base64."""
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    enc = Cipher(algorithms.AES(key.encode()), modes.CBC(iv.encode())).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode("ascii")


def _reply(
    tr_id: str, tr_key: str, rt_cd: str, msg_cd: str, msg1: str, output: dict | None = None
) -> str:
    body: dict = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    encrypt = "Y" if tr_id in NOTICE_TR_IDS else "N"
    return json.dumps(
        {"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": encrypt}, "body": body},
        ensure_ascii=False,
    )


# ---- the fake ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubEvent:
    app_key: str | None
    tr_type: str
    tr_id: str
    tr_key: str
    msg_cd: str


@dataclass(eq=False)
class FakeConn:
    ws: ServerConnection
    app_key: str | None = None
    approval_key: str | None = None
    subs: dict[tuple[str, str], None] = field(default_factory=dict)
    pingpongs_sent: list[str] = field(default_factory=list)
    pingpongs_echoed: int = 0
    alive: bool = True


@dataclass
class KisWsFake:
    app_keys: dict[str, str]  # app key -> secret
    max_subscriptions: int = 40
    over_limit_reply: tuple[str, str] = ("OPSP0008", "MAX SUBSCRIBE OVER")
    one_session_per_app_key: bool = True
    in_use_after_drop: int = 0  # OPSP8996 for this many subscribe attempts after a drop
    revoke_keys_on_drop: Iterable[int] = ()  # drop ordinals (1-based) that void approval keys
    pingpong_interval: float | None = None
    notice_key: str = "0123456789abcdef0123456789ABCDEF"
    notice_iv: str = "fedcba9876543210"
    seed: int = 7
    max_batch: int = 3
    with_bsop_date: bool = True
    # records
    subscribe_log: list[SubEvent] = field(default_factory=list)
    client_pings: int = 0
    pingpongs_sent: int = 0
    pingpongs_echoed: int = 0
    connections: list[FakeConn] = field(default_factory=list)
    approvals_issued: int = 0
    drops_done: int = 0
    delivered: list[Tick] = field(default_factory=list)
    lost: list[Tick] = field(default_factory=list)
    undelivered: list[Tick] = field(default_factory=list)
    frames_sent: int = 0
    multi_record_frames: int = 0

    def __post_init__(self) -> None:
        self._issued: dict[str, str] = {}  # approval key -> app key
        self._server: Server | None = None
        self._http: LoopbackServer | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._in_use_left: dict[str, int] = {}
        self._revoke_at = set(self.revoke_keys_on_drop)
        self._rng = random.Random(self.seed)
        self.ws_url = ""
        self.base_url = ""
        self.position: datetime | None = None  # replay clock: time of the last tape tick

    def now(self) -> datetime:
        """The replay's compressed clock: the time of the tape tick most recently sent or
        skipped, so a client clock that reads it agrees with the tick timestamps."""
        return self.position or datetime.now(UTC)

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        fake = self

        class _Conn(ServerConnection):
            def process_event(self, event: object) -> None:
                if isinstance(event, Frame) and event.opcode is Opcode.PING:
                    fake.client_pings += 1
                super().process_event(event)  # type: ignore[arg-type]

        self._server = await serve(
            self._handler, "127.0.0.1", 0, ping_interval=None, create_connection=_Conn
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{port}/tryitout"
        app = Starlette(routes=[Route("/oauth2/Approval", self._approval, methods=["POST"])])
        self._http = LoopbackServer(app, "127.0.0.1", free_port(), "kis-ws-fake-http")
        await asyncio.to_thread(self._http.start)
        self.base_url = self._http.base_url
        if self.pingpong_interval:
            self._pinger = asyncio.create_task(self._ping_loop())

    async def stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        if self._http is not None:
            await asyncio.to_thread(self._http.stop)

    # ---- approval keys ----------------------------------------------------------------
    def issue_key(self, app_key: str) -> str:
        key = secrets.token_hex(18)
        self._issued[key] = app_key
        self.approvals_issued += 1
        return key

    def revoke_keys(self, app_key: str | None = None) -> None:
        for key, owner in list(self._issued.items()):
            if app_key is None or owner == app_key:
                del self._issued[key]

    async def _approval(self, request: Request) -> JSONResponse:
        body = await request.json()
        key, secret = body.get("appkey"), body.get("secretkey")
        if body.get("grant_type") != "client_credentials" or self.app_keys.get(key) != secret:
            return JSONResponse(
                {"error_code": "EGW00105", "error_description": "유효하지 않은 AppSecret입니다."},
                403,
            )
        return JSONResponse({"approval_key": self.issue_key(key)})

    # ---- the websocket side ---------------------------------------------------------------
    def live(self) -> list[FakeConn]:
        return [c for c in self.connections if c.alive]

    def subscriber(self, tr_id: str, tr_key: str) -> FakeConn | None:
        for conn in self.live():
            if (tr_id, tr_key) in conn.subs:
                return conn
        return None

    def subscribed_keys(self, tr_id: str = "H0STCNT0") -> list[str]:
        """Every live subscription of ``tr_id``, one entry per (connection, key)."""
        return [k for c in self.live() for (t, k) in c.subs if t == tr_id]

    async def _handler(self, ws: ServerConnection) -> None:
        conn = FakeConn(ws)
        self.connections.append(conn)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    continue
                if message in conn.pingpongs_sent:
                    conn.pingpongs_sent.remove(message)
                    conn.pingpongs_echoed += 1
                    self.pingpongs_echoed += 1
                    continue
                await ws.send(self._answer(conn, message))
        except ConnectionClosed:
            pass
        finally:
            conn.alive = False

    def _answer(self, conn: FakeConn, message: str) -> str:
        try:
            msg = json.loads(message)
            header, inner = msg["header"], msg["body"]["input"]
            approval, tr_type = header["approval_key"], header["tr_type"]
            tr_id, tr_key = inner["tr_id"], inner["tr_key"]
        except (ValueError, KeyError, TypeError):
            return _reply("", "", "1", "OPSP0007", "JSON PARSING ERROR : invalid json format")

        def log(msg_cd: str) -> None:
            self.subscribe_log.append(SubEvent(conn.app_key, tr_type, tr_id, tr_key, msg_cd))

        app_key = self._issued.get(approval)
        if app_key is None or (conn.app_key is not None and app_key != conn.app_key):
            log("OPSP0011")
            return _reply(tr_id, tr_key, "1", "OPSP0011", "invalid approval : NOT FOUND")
        if conn.app_key is None:
            other = [c for c in self.live() if c is not conn and c.app_key == app_key]
            left = self._in_use_left.get(app_key, 0)
            if (self.one_session_per_app_key and other) or left > 0:
                if left > 0:
                    self._in_use_left[app_key] = left - 1
                log("OPSP8996")
                return _reply(tr_id, tr_key, "1", "OPSP8996", "ALREADY IN USE appkey")
            conn.app_key, conn.approval_key = app_key, approval
        key = (tr_id, tr_key)
        if tr_type == "1":
            if key in conn.subs:
                log("OPSP0002")
                return _reply(tr_id, tr_key, "1", "OPSP0002", "ALREADY IN SUBSCRIBE")
            if len(conn.subs) >= self.max_subscriptions:
                code, text = self.over_limit_reply
                log(code)
                return _reply(tr_id, tr_key, "1", code, text)
            conn.subs[key] = None
            log("OPSP0000")
            output = {"iv": self.notice_iv, "key": self.notice_key}
            return _reply(tr_id, tr_key, "0", "OPSP0000", "SUBSCRIBE SUCCESS", output)
        if tr_type == "2":
            if key not in conn.subs:
                log("OPSP0003")
                return _reply(tr_id, tr_key, "1", "OPSP0003", "UNSUBSCRIBE ERROR(not found!)")
            del conn.subs[key]
            log("OPSP0001")
            return _reply(tr_id, tr_key, "0", "OPSP0001", "UNSUBSCRIBE SUCCESS")
        log("OPSP0007")
        return _reply(tr_id, tr_key, "1", "OPSP0007", "invalid tr_type")

    # ---- server-initiated traffic ----------------------------------------------------------
    async def send_pingpong(self) -> int:
        """Send PINGPONG to every live connection; return how many got it."""
        text = json.dumps(
            {
                "header": {
                    "tr_id": "PINGPONG",
                    "datetime": datetime.now(KST).strftime("%Y%m%d%H%M%S"),
                }
            }
        )
        sent = 0
        for conn in self.live():
            conn.pingpongs_sent.append(text)
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(text)
                sent += 1
                self.pingpongs_sent += 1
        return sent

    async def _ping_loop(self) -> None:
        assert self.pingpong_interval
        while True:
            await asyncio.sleep(self.pingpong_interval)
            await self.send_pingpong()

    async def send_raw(self, text: str, conn: FakeConn | None = None) -> None:
        for target in [conn] if conn else self.live():
            with contextlib.suppress(ConnectionClosed):
                await target.ws.send(text)

    async def send_notice(
        self, hts_id: str, fields: Sequence[str], *, tr_id: str = "H0STCNI0", encrypt: bool = True
    ) -> bool:
        """Send one execution notice to the connection subscribed to ``hts_id``."""
        conn = self.subscriber(tr_id, hts_id)
        if conn is None:
            return False
        plain = "^".join(fields)
        payload = encrypt_notice(plain, self.notice_key, self.notice_iv) if encrypt else plain
        await conn.ws.send(f"{'1' if encrypt else '0'}|{tr_id}|001|{payload}")
        return True

    async def send_ticks(self, ticks: Sequence[Tick], *, extra: int = 0) -> None:
        """Send ``ticks`` as one frame to each subscriber (grouped by connection)."""
        groups: dict[int, tuple[FakeConn, list[Tick]]] = {}
        for tick in ticks:
            conn = self.subscriber("H0STCNT0", tick.symbol)
            if conn is None:
                self.undelivered.append(tick)
                continue
            groups.setdefault(id(conn), (conn, []))[1].append(tick)
        for conn, group in groups.values():
            await self._send_frame(conn, group, extra=extra)

    async def _send_frame(self, conn: FakeConn, ticks: list[Tick], *, extra: int = 0) -> None:
        records = [trade_record(t, with_date=self.with_bsop_date, extra=extra) for t in ticks]
        try:
            await conn.ws.send(data_frame("H0STCNT0", records))
        except ConnectionClosed:
            self.undelivered.extend(ticks)
            return
        self.delivered.extend(ticks)
        self.frames_sent += 1
        if len(ticks) > 1:
            self.multi_record_frames += 1

    async def drop_all(self) -> int:
        """Close every live connection abruptly (no close frame), as a network fault does."""
        self.drops_done += 1
        dropped = 0
        for conn in self.live():
            conn.alive = False
            if conn.app_key is not None:
                if self.in_use_after_drop:
                    self._in_use_left[conn.app_key] = self.in_use_after_drop
                if self.drops_done in self._revoke_at:
                    self.revoke_keys(conn.app_key)
            transport = conn.ws.transport
            if transport is not None:
                transport.abort()
            dropped += 1
        return dropped

    async def wait_subscribed(self, keys: Iterable[str], timeout: float = 10.0) -> None:
        wanted = set(keys)
        async with asyncio.timeout(timeout):
            while not wanted <= set(self.subscribed_keys()):
                await asyncio.sleep(0.005)

    async def replay(
        self,
        tape: Sequence[Tick],
        *,
        drops: Mapping[int, int] | None = None,
        resume_timeout: float = 15.0,
    ) -> None:
        """Stream ``tape`` in order, 1..``max_batch`` records a frame.

        ``drops`` maps a tape index to a number of ticks: before sending that index,
        every connection is dropped and that many ticks are skipped (printed while
        the client was away, so lost); the replay resumes once every symbol of the
        tape is subscribed again. Ticks are sent as fast as the client reads them:
        their timestamps are synthetic.
        """
        drops = dict(drops or {})
        symbols = {t.symbol for t in tape}
        await self.wait_subscribed(symbols, resume_timeout)
        i = 0
        while i < len(tape):
            if i in drops:
                skip = drops.pop(i)
                await asyncio.sleep(0.01)  # let the client read what was sent
                await self.drop_all()
                self.lost.extend(tape[i : i + skip])
                if skip:
                    self.position = tape[min(i + skip, len(tape)) - 1].ts
                i += skip
                await self.wait_subscribed(symbols, resume_timeout)
                continue
            conn = self.subscriber("H0STCNT0", tape[i].symbol)
            if conn is None:
                self.undelivered.append(tape[i])
                self.position = tape[i].ts
                i += 1
                continue
            size = self._rng.choice([1, 1, 2, 3][: max(1, self.max_batch + 1)])
            size = min(size, self.max_batch)
            batch: list[Tick] = []
            j = i
            while (
                j < len(tape)
                and len(batch) < size
                and j not in drops
                and self.subscriber("H0STCNT0", tape[j].symbol) is conn
            ):
                batch.append(tape[j])
                j += 1
            self.position = batch[-1].ts
            await self._send_frame(conn, batch)
            i = j
            await asyncio.sleep(0)


def utc(ts: str) -> datetime:
    """``"2025-03-04 09:00:01"`` in KST -> aware UTC."""
    return datetime.strptime(ts, "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST).astimezone(UTC)
