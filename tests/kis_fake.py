"""A loopback fake of the KIS Open API REST side, speaking its real protocol.

What it implements, as the project's KIS reference notes describe the real service:

* ``POST /oauth2/Approval`` (``secretkey``, not ``appsecret``) -> ``{"approval_key"}``.
* ``POST /oauth2/tokenP``: counts issues, one per minute per app key (``EGW00133`` in
  the non-envelope ``{"error_code", "error_description"}`` shape), the same token again
  within 6 h, expiry in ``access_token_token_expired`` (KST). ``POST /oauth2/revokeP``.
* ``/uapi/...``: header checks (appkey, appsecret, ``authorization: Bearer``, tr_id,
  custtype) answered like KIS with ``rt_cd`` "1"; expired tokens get ``EGW00123``
  (HTTP status configurable, 200 or 500: unconfirmed which KIS uses); a per-app-key
  limit of N requests in any second answered ``EGW00201`` (status configurable too),
  with every arrival time recorded so tests can measure the client's throttling.
* quotes, day/week/month candles from ``daily``, minute candles (both endpoints) built
  from ``tape`` (a plain ``list[engines.market.Tick]``) with ``CandleAggregator``,
  a paged balance and daily order/fill query (``tr_cont`` F/M/D/E and
  ``CTX_AREA_FK100``/``NK100``), cash orders and modify/cancel that validate the body
  like KIS (UPPERCASE keys, numbers as strings, the tick grid) and record what they saw.

Time: ``advance(seconds)`` moves the fake's wall clock (token expiry, the one-a-minute
rule, "today") without waiting. The rate limit always uses real monotonic time,
because it measures the client.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engines.market import KST, CandleAggregator, Tick, Timeframe, is_on_tick
from tests.conftest import free_port
from tests.loopback import LoopbackServer

PRICE_PATH = "/uapi/domestic-stock/v1/quotations/inquire-price"
DAILY_PATH = "/uapi/domestic-stock/v1/quotations/inquire-daily-itemchartprice"
MINUTE_TODAY_PATH = "/uapi/domestic-stock/v1/quotations/inquire-time-itemchartprice"
MINUTE_PAST_PATH = "/uapi/domestic-stock/v1/quotations/inquire-time-dailychartprice"
BALANCE_PATH = "/uapi/domestic-stock/v1/trading/inquire-balance"
ORDER_PATH = "/uapi/domestic-stock/v1/trading/order-cash"
RVSECNCL_PATH = "/uapi/domestic-stock/v1/trading/order-rvsecncl"
CCLD_PATH = "/uapi/domestic-stock/v1/trading/inquire-daily-ccld"

# tr_ids per endpoint: (real, paper). Quote ids are shared.
TR_IDS: dict[str, tuple[set[str], set[str]]] = {
    PRICE_PATH: ({"FHKST01010100"}, {"FHKST01010100"}),
    DAILY_PATH: ({"FHKST03010100"}, {"FHKST03010100"}),
    MINUTE_TODAY_PATH: ({"FHKST03010200"}, {"FHKST03010200"}),
    MINUTE_PAST_PATH: ({"FHKST03010230"}, {"FHKST03010230"}),
    BALANCE_PATH: ({"TTTC8434R"}, {"VTTC8434R"}),
    ORDER_PATH: ({"TTTC0012U", "TTTC0011U"}, {"VTTC0012U", "VTTC0011U"}),
    RVSECNCL_PATH: ({"TTTC0013U"}, {"VTTC0013U"}),
    CCLD_PATH: ({"TTTC8001R"}, {"VTTC8001R"}),
}
BUY_TR_IDS = {"TTTC0012U", "VTTC0012U"}

MINUTE_ROWS = {MINUTE_TODAY_PATH: 30, MINUTE_PAST_PATH: 120}
DAILY_ROWS = 100


@dataclass
class FakeQuote:
    price: int
    prev_close: int
    open: int
    high: int
    low: int
    volume: int


@dataclass
class DailyRow:
    day: date
    open: int
    high: int
    low: int
    close: int
    volume: int


@dataclass
class Holding:
    symbol: str
    name: str
    qty: int
    avg_price: float
    price: int


@dataclass
class FakeOrder:
    order_id: str
    branch: str
    day: date
    at: str  # HHMMSS
    symbol: str
    side: str  # "01" sell, "02" buy
    dvsn: str
    qty: int
    price: int
    filled_qty: int = 0
    filled_amount: int = 0
    cancelled: bool = False
    original: str = ""


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, str]
    body: Any
    at: float  # time.monotonic() on arrival


@dataclass
class _Token:
    app_key: str
    value: str
    issued_at: datetime
    expires_at: datetime
    expired: bool = False
    revoked: bool = False


def _ok(output: dict[str, Any], msg: str = "정상처리 되었습니다.", **extra: Any) -> dict[str, Any]:
    return {"rt_cd": "0", "msg_cd": "MCA00000", "msg1": msg, **output, **extra}


def _fail(msg_cd: str, msg1: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"rt_cd": "1", "msg_cd": msg_cd, "msg1": msg1}, status)


@dataclass
class KisFake:
    app_keys: dict[str, str] = field(default_factory=dict)  # appkey -> appsecret
    down: bool = False
    approvals: list[str] = field(default_factory=list)  # app keys that asked
    paper: bool = False
    account: str = "50123456"
    product_code: str = "01"
    rate_limit: int | None = None  # per app key per second; None: 20 real / 2 paper
    rate_limit_status: int = 500  # EGW00201 comes with 200 or 500 (unconfirmed)
    expired_status: int = 200  # EGW00123 comes with 200 or an error status (unconfirmed)
    token_interval: timedelta = timedelta(seconds=60)
    token_lifetime: timedelta = timedelta(hours=24)
    born_expired: bool = False  # every token issued from now on is already expired
    force_rate_limited: int = 0  # answer the next N /uapi calls EGW00201
    market_open: bool = True
    reject_next_order: str = ""  # msg1 of a business rejection for the next order
    delay_s: float = 0.0  # every /uapi answer waits this long (timeouts)
    override_next: tuple[int, str] | None = None  # (status, raw body) for the next /uapi call
    expires_in_override: int | None = None  # send a misleading expires_in
    frozen_at: datetime | None = None  # wall clock stands still here (plus offset)
    quotes: dict[str, FakeQuote] = field(default_factory=dict)
    daily: dict[str, list[DailyRow]] = field(default_factory=dict)
    tape: list[Tick] = field(default_factory=list)
    holdings: list[Holding] = field(default_factory=list)
    cash: int = 0
    balance_page_size: int = 20
    ccld_page_size: int = 20
    # records
    issues: list[str] = field(default_factory=list)  # app key of every token issued
    token_requests: int = 0  # every POST /oauth2/tokenP, refused or not
    revocations: list[str] = field(default_factory=list)
    requests: list[SeenRequest] = field(default_factory=list)
    arrivals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    orders_seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    offset: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        self._tokens: dict[str, _Token] = {}
        self._last_issue: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._next_order = 1

    # --- control ---------------------------------------------------------------------

    def now(self) -> datetime:
        base = self.frozen_at if self.frozen_at is not None else datetime.now(UTC)
        return base + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired: the next use gets EGW00123."""
        for token in self._tokens.values():
            token.expired = True

    @property
    def limit(self) -> int:
        if self.rate_limit is not None:
            return self.rate_limit
        return 2 if self.paper else 20

    def uapi_requests(self, path: str | None = None) -> list[SeenRequest]:
        return [r for r in self.requests if path is None or r.path == path]

    def max_in_window(self, app_key: str, window: float = 1.0) -> int:
        """Most arrivals of ``app_key`` within any ``window`` seconds (sliding)."""
        times = sorted(self.arrivals.get(app_key, []))
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def fill(self, order_id: str, qty: int, price: int) -> None:
        order = self.orders[order_id]
        order.filled_qty += qty
        order.filled_amount += qty * price

    # --- oauth -----------------------------------------------------------------------

    async def approval(self, request: Request) -> JSONResponse:
        if self.down:
            return JSONResponse({"error_code": "EGW00500", "error_description": "down"}, 500)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error_code": "EGW00002", "error_description": "bad json"}, 400)
        key, secret = body.get("appkey"), body.get("secretkey")
        if body.get("grant_type") != "client_credentials" or not key or not secret:
            return JSONResponse(
                {"error_code": "EGW00002", "error_description": "invalid request"}, 400
            )
        self.approvals.append(key)
        if self.app_keys.get(key) != secret:
            return JSONResponse(
                {"error_code": "EGW00105", "error_description": "유효하지 않은 AppSecret입니다."},
                403,
            )
        return JSONResponse({"approval_key": secrets.token_hex(18)})

    async def token_p(self, request: Request) -> JSONResponse:
        self.token_requests += 1
        if self.down:
            return JSONResponse({"error_code": "EGW00500", "error_description": "down"}, 500)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error_code": "EGW00002", "error_description": "bad json"}, 400)
        key, secret = body.get("appkey"), body.get("appsecret")
        if body.get("grant_type") != "client_credentials" or not key or not secret:
            return JSONResponse(
                {"error_code": "EGW00002", "error_description": "invalid request"}, 400
            )
        if self.app_keys.get(key) != secret:
            return JSONResponse(
                {"error_code": "EGW00103", "error_description": "유효하지 않은 AppKey입니다."},
                403,
            )
        now = self.now()
        with self._lock:
            last = self._last_issue.get(key)
            if last is not None and now - last < self.token_interval:
                return JSONResponse(
                    {
                        "error_code": "EGW00133",
                        "error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
                    },
                    403,
                )
            self._last_issue[key] = now
            self.issues.append(key)
            # Within 6 h KIS hands out the same token again, unless it is dead.
            current = next(
                (
                    t
                    for t in self._tokens.values()
                    if t.app_key == key
                    and not t.expired
                    and not t.revoked
                    and now - t.issued_at < timedelta(hours=6)
                ),
                None,
            )
            if current is None:
                value = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(240)
                current = _Token(key, value, now, now + self.token_lifetime)
                self._tokens[value] = current
            if self.born_expired:
                current.expired = True
        expires_kst = current.expires_at.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S")
        return JSONResponse(
            {
                "access_token": current.value,
                "access_token_token_expired": expires_kst,
                "token_type": "Bearer",
                "expires_in": self.expires_in_override
                or int((current.expires_at - now).total_seconds()),
            }
        )

    async def revoke_p(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error_code": "EGW00002", "error_description": "bad json"}, 400)
        key, secret, value = body.get("appkey"), body.get("appsecret"), body.get("token")
        if self.app_keys.get(key) != secret or value not in self._tokens:
            return JSONResponse(
                {"error_code": "EGW00121", "error_description": "유효하지 않은 token 입니다."}, 403
            )
        self._tokens[value].revoked = True
        self.revocations.append(key)
        return JSONResponse({"code": 200, "message": "접근토큰 폐기에 성공하였습니다"})

    # --- the gateway in front of every /uapi call ---------------------------------

    async def _gate(self, request: Request) -> tuple[SeenRequest, Response | None]:
        """Record the call and check what KIS's gateway checks, in its order."""
        arrived = time.monotonic()
        headers = {k.lower(): v for k, v in request.headers.items()}
        body: Any = None
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                body = ...
        seen = SeenRequest(
            request.method, request.url.path, headers, dict(request.query_params), body, arrived
        )
        self.requests.append(seen)
        key = headers.get("appkey", "")
        with self._lock:
            window = self.arrivals[key]
            recent = sum(1 for t in window if arrived - t < 1.0)
            window.append(arrived)
            over = recent >= self.limit
            if self.force_rate_limited > 0:
                self.force_rate_limited -= 1
                over = True
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.override_next is not None:
            status, raw = self.override_next
            self.override_next = None
            return seen, Response(raw, status, media_type="application/json")
        if self.down:
            return seen, _fail("EGW00500", "시스템 점검 중입니다.", 500)
        if over:
            return seen, _fail(
                "EGW00201", "초당 거래건수를 초과하였습니다.", self.rate_limit_status
            )
        if not key or key not in self.app_keys:
            return seen, _fail("EGW00103", "유효하지 않은 AppKey입니다.", 500)
        if headers.get("appsecret") != self.app_keys[key]:
            return seen, _fail("EGW00105", "유효하지 않은 AppSecret입니다.", 500)
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return seen, _fail("EGW00205", "credentials_type이 유효하지 않습니다.(Bearer)", 500)
        token = self._tokens.get(auth[len("Bearer ") :])
        if token is None or token.revoked or token.app_key != key:
            return seen, _fail("EGW00121", "유효하지 않은 token 입니다.", 500)
        if token.expired or token.expires_at <= self.now():
            return seen, _fail("EGW00123", "기간이 만료된 token 입니다.", self.expired_status)
        if headers.get("custtype") not in ("P", "B"):
            return seen, _fail("EGW00206", "custtype이 유효하지 않습니다.", 500)
        real, paper = TR_IDS[request.url.path]
        if headers.get("tr_id") not in (paper if self.paper else real):
            return seen, _fail("OPSQ0002", "없는 서비스 코드 입니다", 500)
        if request.method == "POST" and not isinstance(body, dict):
            return seen, _fail("OPSQ2000", "ERROR : INPUT INVALID JSON")
        return seen, None

    @staticmethod
    def _missing(values: dict[str, Any], keys: tuple[str, ...]) -> JSONResponse | None:
        for key in keys:
            if key not in values:
                return _fail("OPSQ2001", f"ERROR : INPUT_FIELD_NAME {key}")
        return None

    def _check_account(self, values: dict[str, Any]) -> JSONResponse | None:
        if values.get("CANO") != self.account or values.get("ACNT_PRDT_CD") != self.product_code:
            return _fail("OPSQ2000", "ERROR : INPUT INVALID_CHECK_ACNO")
        return None

    def _page(
        self, seen: SeenRequest, rows: list[dict[str, Any]], size: int
    ) -> tuple[list[dict[str, Any]], dict[str, str], JSONResponse | None]:
        """Slice ``rows`` the way KIS pages: the offset travels in CTX_AREA_NK100."""
        nk = seen.params.get("CTX_AREA_NK100", "")
        fk = seen.params.get("CTX_AREA_FK100", "")
        tr_cont = seen.headers.get("tr_cont", "")
        if bool(nk.strip()) != (tr_cont == "N"):
            return [], {}, _fail("OPSQ2000", "ERROR : tr_cont and CTX_AREA_NK100 disagree")
        offset = 0
        if nk.strip():
            try:
                account, product, raw = nk.strip().split("^")
                offset = int(raw)
            except ValueError:
                return [], {}, _fail("OPSQ2000", "ERROR : INVALID CTX_AREA_NK100")
            if (account, product) != (self.account, self.product_code) or not fk.strip():
                return [], {}, _fail("OPSQ2000", "ERROR : INVALID CTX_AREA")
        chunk = rows[offset : offset + size]
        more = offset + size < len(rows)
        first = offset == 0
        cont = ("F" if first else "M") if more else ("D" if first else "E")
        ctx = {
            # KIS pads the context fields with spaces; the client must send them back.
            "ctx_area_fk100": f"{self.account}^{self.product_code}^00".ljust(100),
            "ctx_area_nk100": f"{self.account}^{self.product_code}^{offset + size}".ljust(100),
        }
        return chunk, {"tr_cont": cont, **ctx}, None

    # --- quotations ------------------------------------------------------------------

    async def inquire_price(self, request: Request) -> JSONResponse:
        seen, refused = await self._gate(request)
        if refused:
            return refused
        p = seen.params
        if missing := self._missing(p, ("FID_COND_MRKT_DIV_CODE", "FID_INPUT_ISCD")):
            return missing
        if p["FID_COND_MRKT_DIV_CODE"] != "J":
            return _fail("OPSQ2000", "ERROR : INPUT FID_COND_MRKT_DIV_CODE")
        quote = self.quotes.get(p["FID_INPUT_ISCD"])
        if quote is None:
            return _fail("APBK0656", "조회할 자료가 없습니다.")
        change = quote.price - quote.prev_close
        sign = "2" if change > 0 else "5" if change < 0 else "3"
        output = {
            "stck_prpr": str(quote.price),
            "prdy_vrss": str(change),
            "prdy_vrss_sign": sign,
            "prdy_ctrt": f"{change / quote.prev_close * 100:.2f}",
            "acml_vol": str(quote.volume),
            "stck_oprc": str(quote.open),
            "stck_hgpr": str(quote.high),
            "stck_lwpr": str(quote.low),
            "stck_mxpr": str(int(quote.prev_close * 1.3)),
            "stck_llam": str(int(quote.prev_close * 0.7)),
            "w52_hgpr": str(quote.high),
            "w52_lwpr": str(quote.low),
        }
        return JSONResponse(_ok({"output": output}))

    async def daily_candles(self, request: Request) -> JSONResponse:
        seen, refused = await self._gate(request)
        if refused:
            return refused
        p = seen.params
        keys = (
            "FID_COND_MRKT_DIV_CODE",
            "FID_INPUT_ISCD",
            "FID_INPUT_DATE_1",
            "FID_INPUT_DATE_2",
            "FID_PERIOD_DIV_CODE",
            "FID_ORG_ADJ_PRC",
        )
        if missing := self._missing(p, keys):
            return missing
        try:
            d1 = datetime.strptime(p["FID_INPUT_DATE_1"], "%Y%m%d").date()
            d2 = datetime.strptime(p["FID_INPUT_DATE_2"], "%Y%m%d").date()
        except ValueError:
            return _fail("OPSQ2000", "ERROR : INPUT FID_INPUT_DATE")
        period = p["FID_PERIOD_DIV_CODE"]
        if period not in ("D", "W", "M") or p["FID_ORG_ADJ_PRC"] not in ("0", "1"):
            return _fail("OPSQ2000", "ERROR : INPUT FID_PERIOD_DIV_CODE")
        series = self.daily.get(p["FID_INPUT_ISCD"])
        if series is None:
            return _fail("APBK0656", "조회할 자료가 없습니다.")
        rows = sorted((r for r in series if d1 <= r.day <= d2), key=lambda r: r.day)
        if period != "D":
            rows = _group(rows, period)
        rows = list(reversed(rows))[:DAILY_ROWS]
        output2 = [
            {
                "stck_bsop_date": r.day.strftime("%Y%m%d"),
                "stck_oprc": str(r.open),
                "stck_hgpr": str(r.high),
                "stck_lwpr": str(r.low),
                "stck_clpr": str(r.close),
                "acml_vol": str(r.volume),
                "flng_cls_code": "00",
                "mod_yn": "N",
            }
            for r in rows
        ]
        return JSONResponse(
            _ok({"output1": {"stck_shrn_iscd": p["FID_INPUT_ISCD"]}}, output2=output2)
        )

    def minute_rows(self, symbol: str, day: date) -> list[dict[str, str]]:
        """The tape's 1-minute bars of ``symbol`` on ``day`` (KST), oldest first."""
        agg = CandleAggregator([Timeframe.M1])
        candles = []
        for tick in sorted(
            (t for t in self.tape if t.symbol == symbol and t.ts.astimezone(KST).date() == day),
            key=lambda t: t.ts,
        ):
            candles.extend(agg.on_tick(tick))
        last = agg.current(symbol, Timeframe.M1)
        if last is not None:
            candles.append(last)
        rows = []
        for c in candles:
            local = c.start.astimezone(KST)
            rows.append(
                {
                    "stck_bsop_date": local.strftime("%Y%m%d"),
                    "stck_cntg_hour": local.strftime("%H%M%S"),
                    "stck_prpr": str(c.close),
                    "stck_oprc": str(c.open),
                    "stck_hgpr": str(c.high),
                    "stck_lwpr": str(c.low),
                    "cntg_vol": str(c.volume),
                    "acml_tr_pbmn": str(c.close * c.volume),
                }
            )
        return rows

    async def minute_candles(self, request: Request) -> JSONResponse:
        seen, refused = await self._gate(request)
        if refused:
            return refused
        p = seen.params
        past = seen.path == MINUTE_PAST_PATH
        keys = ["FID_COND_MRKT_DIV_CODE", "FID_INPUT_ISCD", "FID_INPUT_HOUR_1"]
        keys += ["FID_PW_DATA_INCU_YN"]
        keys += ["FID_INPUT_DATE_1", "FID_FAKE_TICK_INCU_YN"] if past else ["FID_ETC_CLS_CODE"]
        if missing := self._missing(p, tuple(keys)):
            return missing
        hour = p["FID_INPUT_HOUR_1"]
        if len(hour) != 6 or not hour.isdigit():
            return _fail("OPSQ2000", "ERROR : INPUT FID_INPUT_HOUR_1")
        symbol = p["FID_INPUT_ISCD"]
        if past:
            try:
                day = datetime.strptime(p["FID_INPUT_DATE_1"], "%Y%m%d").date()
            except ValueError:
                return _fail("OPSQ2000", "ERROR : INPUT FID_INPUT_DATE_1")
        else:
            day = self.now().astimezone(KST).date()
        rows = [r for r in self.minute_rows(symbol, day) if r["stck_cntg_hour"] <= hour]
        rows.reverse()
        limit = MINUTE_ROWS[seen.path]
        if past and p["FID_PW_DATA_INCU_YN"] == "Y" and len(rows) < limit:
            # "past data included": the page continues into earlier days
            earlier = sorted(
                {t.ts.astimezone(KST).date() for t in self.tape if t.symbol == symbol},
                reverse=True,
            )
            for prev in (d for d in earlier if d < day):
                rows.extend(reversed(self.minute_rows(symbol, prev)))
                if len(rows) >= limit:
                    break
        return JSONResponse(
            _ok(
                {"output1": {"stck_prpr": rows[0]["stck_prpr"] if rows else "0"}},
                output2=rows[:limit],
            )
        )

    # --- account ---------------------------------------------------------------------

    async def inquire_balance(self, request: Request) -> JSONResponse:
        seen, refused = await self._gate(request)
        if refused:
            return refused
        keys = (
            "CANO",
            "ACNT_PRDT_CD",
            "AFHR_FLPR_YN",
            "OFL_YN",
            "INQR_DVSN",
            "UNPR_DVSN",
            "FUND_STTL_ICLD_YN",
            "FNCG_AMT_AUTO_RDPT_YN",
            "PRCS_DVSN",
            "CTX_AREA_FK100",
            "CTX_AREA_NK100",
        )
        if missing := self._missing(seen.params, keys):
            return missing
        if bad := self._check_account(seen.params):
            return bad
        rows = [
            {
                "pdno": h.symbol,
                "prdt_name": h.name,
                "hldg_qty": str(h.qty),
                "ord_psbl_qty": str(h.qty),
                "pchs_avg_pric": f"{h.avg_price:.4f}",
                "pchs_amt": str(round(h.avg_price * h.qty)),
                "prpr": str(h.price),
                "evlu_amt": str(h.price * h.qty),
                "evlu_pfls_amt": str(h.price * h.qty - round(h.avg_price * h.qty)),
                "evlu_pfls_rt": "0.00",
            }
            for h in self.holdings
        ]
        chunk, ctx, bad = self._page(seen, rows, self.balance_page_size)
        if bad:
            return bad
        tr_cont = ctx.pop("tr_cont")
        total = sum(h.price * h.qty for h in self.holdings)
        output2 = [
            {
                "dnca_tot_amt": str(self.cash),
                "tot_evlu_amt": str(self.cash + total),
                "nass_amt": str(self.cash + total),
                "scts_evlu_amt": str(total),
            }
        ]
        return JSONResponse(
            _ok({"output1": chunk, "output2": output2}, **ctx), headers={"tr_cont": tr_cont}
        )

    async def inquire_daily_ccld(self, request: Request) -> JSONResponse:
        seen, refused = await self._gate(request)
        if refused:
            return refused
        p = seen.params
        keys = (
            "CANO",
            "ACNT_PRDT_CD",
            "INQR_STRT_DT",
            "INQR_END_DT",
            "SLL_BUY_DVSN_CD",
            "INQR_DVSN",
            "PDNO",
            "CCLD_DVSN",
            "ORD_GNO_BRNO",
            "ODNO",
            "INQR_DVSN_3",
            "INQR_DVSN_1",
            "CTX_AREA_FK100",
            "CTX_AREA_NK100",
        )
        if missing := self._missing(p, keys):
            return missing
        if bad := self._check_account(p):
            return bad
        try:
            d1 = datetime.strptime(p["INQR_STRT_DT"], "%Y%m%d").date()
            d2 = datetime.strptime(p["INQR_END_DT"], "%Y%m%d").date()
        except ValueError:
            return _fail("OPSQ2000", "ERROR : INPUT INQR_STRT_DT")
        if p["CCLD_DVSN"] not in ("00", "01", "02"):
            return _fail("OPSQ2000", "ERROR : INPUT CCLD_DVSN")
        rows = []
        for o in sorted(self.orders.values(), key=lambda o: o.order_id, reverse=True):
            if not d1 <= o.day <= d2:
                continue
            if p["CCLD_DVSN"] == "01" and not o.filled_qty:
                continue
            if p["CCLD_DVSN"] == "02" and o.filled_qty:
                continue
            avg = o.filled_amount / o.filled_qty if o.filled_qty else 0
            rows.append(
                {
                    "ord_dt": o.day.strftime("%Y%m%d"),
                    "ord_gno_brno": o.branch,
                    "odno": o.order_id,
                    "orgn_odno": o.original,
                    "ord_dvsn_name": "지정가" if o.dvsn == "00" else "시장가",
                    "sll_buy_dvsn_cd": o.side,
                    "pdno": o.symbol,
                    "prdt_name": o.symbol,
                    "ord_qty": str(o.qty),
                    "ord_unpr": str(o.price),
                    "ord_tmd": o.at,
                    "tot_ccld_qty": str(o.filled_qty),
                    "avg_prvs": f"{avg:.2f}",
                    "cncl_yn": "Y" if o.cancelled else "N",
                    "tot_ccld_amt": str(o.filled_amount),
                    "rmn_qty": str(0 if o.cancelled else o.qty - o.filled_qty),
                    "rjct_qty": "0",
                    "ord_dvsn_cd": o.dvsn,
                }
            )
        chunk, ctx, bad = self._page(seen, rows, self.ccld_page_size)
        if bad:
            return bad
        tr_cont = ctx.pop("tr_cont")
        output2 = {"tot_ord_qty": str(sum(o.qty for o in self.orders.values()))}
        return JSONResponse(
            _ok({"output1": chunk, "output2": output2}, **ctx), headers={"tr_cont": tr_cont}
        )

    # --- orders ----------------------------------------------------------------------

    def _new_order_number(self) -> str:
        with self._lock:
            n = self._next_order
            self._next_order += 1
        return f"{n:010d}"

    def _order_reply(self, order_id: str, at: str) -> JSONResponse:
        output = {"KRX_FWDG_ORD_ORGNO": "91252", "ODNO": order_id, "ORD_TMD": at}
        return JSONResponse(_ok({"output": output}, msg="주문 전송 완료 되었습니다."))

    @staticmethod
    def _check_strings(body: dict[str, Any]) -> JSONResponse | None:
        for key, value in body.items():
            if key != key.upper():
                return _fail("OPSQ2000", f"ERROR : INPUT FIELD NAME {key}")
            if not isinstance(value, str):
                return _fail("OPSQ2000", f"ERROR : INPUT FIELD TYPE {key}")
        return None

    def _business_refusal(self) -> JSONResponse | None:
        if not self.market_open:
            return _fail("APBK0919", "장운영일자가 주문일과 상이합니다")
        if self.reject_next_order:
            msg, self.reject_next_order = self.reject_next_order, ""
            return _fail("APBK0952", msg)
        return None

    async def order_cash(self, request: Request) -> JSONResponse:
        seen, refused = await self._gate(request)
        if refused:
            return refused
        body = seen.body
        tr_id = seen.headers["tr_id"]
        self.orders_seen.append((tr_id, dict(body)))
        keys = ("CANO", "ACNT_PRDT_CD", "PDNO", "ORD_DVSN", "ORD_QTY", "ORD_UNPR")
        if bad := self._missing(body, keys) or self._check_strings(body):
            return bad
        if bad := self._check_account(body):
            return bad
        dvsn, qty, price = body["ORD_DVSN"], body["ORD_QTY"], body["ORD_UNPR"]
        if dvsn not in ("00", "01"):
            return _fail("APBK0506", "주문구분이 올바르지 않습니다.")
        if not qty.isdigit() or int(qty) <= 0:
            return _fail("APBK0505", "주문수량이 올바르지 않습니다.")
        if not price.isdigit() or (dvsn == "01" and price != "0"):
            return _fail("APBK0507", "주문단가가 올바르지 않습니다.")
        if dvsn == "00" and not is_on_tick(int(price)):
            return _fail("APBK0508", "호가단위가 올바르지 않습니다.")
        if body["PDNO"] not in self.quotes:
            return _fail("APBK0656", "해당 종목정보가 없습니다.")
        if refusal := self._business_refusal():
            return refusal
        now = self.now().astimezone(KST)
        order = FakeOrder(
            order_id=self._new_order_number(),
            branch="91252",
            day=now.date(),
            at=now.strftime("%H%M%S"),
            symbol=body["PDNO"],
            side="02" if tr_id in BUY_TR_IDS else "01",
            dvsn=dvsn,
            qty=int(qty),
            price=int(price),
        )
        self.orders[order.order_id] = order
        return self._order_reply(order.order_id, order.at)

    async def order_rvsecncl(self, request: Request) -> JSONResponse:
        seen, refused = await self._gate(request)
        if refused:
            return refused
        body = seen.body
        self.orders_seen.append((seen.headers["tr_id"], dict(body)))
        keys = (
            "CANO",
            "ACNT_PRDT_CD",
            "KRX_FWDG_ORD_ORGNO",
            "ORGN_ODNO",
            "ORD_DVSN",
            "RVSE_CNCL_DVSN_CD",
            "ORD_QTY",
            "ORD_UNPR",
            "QTY_ALL_ORD_YN",
        )
        if bad := self._missing(body, keys) or self._check_strings(body):
            return bad
        if bad := self._check_account(body):
            return bad
        original = self.orders.get(body["ORGN_ODNO"])
        if original is None or original.branch != body["KRX_FWDG_ORD_ORGNO"]:
            return _fail("APBK0721", "원주문번호가 존재하지 않습니다.")
        kind, all_qty = body["RVSE_CNCL_DVSN_CD"], body["QTY_ALL_ORD_YN"]
        qty, price = body["ORD_QTY"], body["ORD_UNPR"]
        if kind not in ("01", "02") or all_qty not in ("Y", "N"):
            return _fail("APBK0506", "정정취소구분이 올바르지 않습니다.")
        if not qty.isdigit() or (all_qty == "N" and int(qty) <= 0):
            return _fail("APBK0505", "주문수량이 올바르지 않습니다.")
        if not price.isdigit() or (kind == "01" and not is_on_tick(int(price))):
            return _fail("APBK0508", "호가단위가 올바르지 않습니다.")
        if original.cancelled:
            return _fail("APBK0722", "이미 취소된 주문입니다.")
        if refusal := self._business_refusal():
            return refusal
        now = self.now().astimezone(KST)
        remaining = original.qty - original.filled_qty
        new_qty = remaining if all_qty == "Y" else int(qty)
        order = FakeOrder(
            order_id=self._new_order_number(),
            branch=original.branch,
            day=now.date(),
            at=now.strftime("%H%M%S"),
            symbol=original.symbol,
            side=original.side,
            dvsn=body["ORD_DVSN"],
            qty=new_qty,
            price=int(price) if kind == "01" else original.price,
            cancelled=kind == "02",
            original=original.order_id,
        )
        if kind == "02" and new_qty >= remaining:
            original.cancelled = True
        self.orders[order.order_id] = order
        return self._order_reply(order.order_id, order.at)

    # --- server ----------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth2/Approval", self.approval, methods=["POST"]),
                Route("/oauth2/tokenP", self.token_p, methods=["POST"]),
                Route("/oauth2/revokeP", self.revoke_p, methods=["POST"]),
                Route(PRICE_PATH, self.inquire_price, methods=["GET"]),
                Route(DAILY_PATH, self.daily_candles, methods=["GET"]),
                Route(MINUTE_TODAY_PATH, self.minute_candles, methods=["GET"]),
                Route(MINUTE_PAST_PATH, self.minute_candles, methods=["GET"]),
                Route(BALANCE_PATH, self.inquire_balance, methods=["GET"]),
                Route(CCLD_PATH, self.inquire_daily_ccld, methods=["GET"]),
                Route(ORDER_PATH, self.order_cash, methods=["POST"]),
                Route(RVSECNCL_PATH, self.order_rvsecncl, methods=["POST"]),
            ]
        )

    def serve(self) -> LoopbackServer:
        server = LoopbackServer(self.app(), "127.0.0.1", free_port(), "kis-fake")
        server.start()
        return server


def _group(rows: list[DailyRow], period: str) -> list[DailyRow]:
    """Week or month bars from day bars, labelled with their first trading day."""
    groups: dict[tuple[int, int], list[DailyRow]] = {}
    for r in rows:
        iso = r.day.isocalendar()
        key = (iso.year, iso.week) if period == "W" else (r.day.year, r.day.month)
        groups.setdefault(key, []).append(r)
    out = []
    for members in groups.values():
        out.append(
            DailyRow(
                members[0].day,
                members[0].open,
                max(m.high for m in members),
                min(m.low for m in members),
                members[-1].close,
                sum(m.volume for m in members),
            )
        )
    return sorted(out, key=lambda r: r.day)
