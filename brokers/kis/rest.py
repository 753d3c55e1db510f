"""The KIS REST adapter: quotes, candles, balance, orders and fills of one account.

Every call goes through one path (:meth:`KisRest._request`) so the rules KIS
enforces are applied once, in order:

1. a valid access token (cached, see ``tokens``), in the headers KIS expects;
2. a slot of the app key's shared rate limiter (:mod:`brokers.ratelimit`), held while
   the request is in flight so the window starts when the answer is back;
3. the answer's code decides, not its HTTP status (both are known to vary):
   ``EGW00201`` backs off with jitter and retries a bounded number of times,
   ``EGW00123`` re-issues the token once and retries once, business errors map to
   ``brokers.base`` errors (``errors``), and every body is validated (``parsing``).

Orders are validated before anything is sent (quantity, side, the KRX tick grid), so
a mistake costs neither a request of the rate budget nor a rejected order at the
broker. Orders are never retried after a timeout: the outcome is unknown, and a
second send could place a second order.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar

import httpx

from brokers.base import (
    AuthExpired,
    Balance,
    BrokerError,
    BrokerUnavailable,
    CandlePeriod,
    Fill,
    OrderAck,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    RateLimited,
    UnknownSymbol,
)
from brokers.kis import trids
from brokers.kis.auth import PAPER_BASE_URL, REAL_BASE_URL
from brokers.kis.clock import Clock, SystemClock
from brokers.kis.errors import (
    INVALID_TOKEN,
    MARKET_CLOSED,
    RATE_LIMITED,
    TOKEN_EXPIRED,
    UNKNOWN_SYMBOL,
    InvalidOrder,
    KisApiError,
    MalformedResponse,
    Unsupported,
    business_error,
)
from brokers.kis.parsing import (
    BalancePage,
    CcldPage,
    decode_json,
    fill_of,
    malformed,
    more_pages,
    order_status_of,
    parse_balance_page,
    parse_ccld_page,
    parse_daily_candles,
    parse_minute_candles,
    parse_order_ack,
    parse_quote,
    parse_status,
    timeframe_of,
)
from brokers.kis.tokens import DEFAULT_MARGIN, TokenManager, TokenStore, key_id
from brokers.ratelimit import SlidingWindowLimiter, limiter_for
from engines.market import KST, Candle, Timeframe, is_on_tick

log = logging.getLogger(__name__)

__all__ = ["KisRest", "Paths"]

REAL_RATE_PER_S = 20.0
PAPER_RATE_PER_S = 2.0
RATE_WINDOW_MARGIN_S = 0.05
"""Added to KIS's one-second window. Slots held in flight already keep the server
from seeing more than the limit; this covers a server that rounds its stamps."""
DAILY_ROWS_PER_CALL = 100
MAX_PAGES = 200  # ~20,000 daily bars or rows: past that, the server is not paging
_SYMBOL = re.compile(r"^[0-9A-Z]{6}$")
_ACCOUNT = re.compile(r"^\d{8}$")
_PRODUCT = re.compile(r"^\d{2}$")
_HHMMSS = re.compile(r"^([01]\d|2[0-3])[0-5]\d[0-5]\d$")

PageT = TypeVar("PageT", BalancePage, CcldPage)


class Paths:
    """REST paths, relative to the base URL."""

    PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
    DAILY_CANDLES = "/uapi/domestic-stock/v1/quotations/inquire-daily-itemchartprice"
    MINUTE_TODAY = "/uapi/domestic-stock/v1/quotations/inquire-time-itemchartprice"
    MINUTE_PAST = "/uapi/domestic-stock/v1/quotations/inquire-time-dailychartprice"
    BALANCE = "/uapi/domestic-stock/v1/trading/inquire-balance"
    ORDER = "/uapi/domestic-stock/v1/trading/order-cash"
    REVISE_CANCEL = "/uapi/domestic-stock/v1/trading/order-rvsecncl"
    DAILY_CCLD = "/uapi/domestic-stock/v1/trading/inquire-daily-ccld"


class KisRest:
    """One app key (and optionally one account) on the KIS REST API.

    ``base_url`` defaults to the real or paper host. ``rate_per_s`` defaults to 20
    (real) or 2 (paper) and is enforced by the limiter shared by every ``KisRest``
    of the same app key in this process. ``clock`` drives token expiry, "today" and
    backoff sleeps; tests pass one they can move. ``client`` may be shared (it is
    then not closed by :meth:`close`).
    """

    name = "kis"

    def __init__(
        self,
        *,
        app_key: str,
        app_secret: str,
        paper: bool,
        account_no: str = "",
        product_code: str = "01",
        base_url: str | None = None,
        token_store: TokenStore | None = None,
        rate_per_s: float | None = None,
        clock: Clock | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        limiter: SlidingWindowLimiter | None = None,
        max_rate_retries: int = 4,
        backoff_base: float = 0.25,
        token_margin: timedelta = DEFAULT_MARGIN,
    ) -> None:
        if not app_key or not app_secret:
            raise ValueError("KIS app key and secret are required")
        if account_no and not _ACCOUNT.match(account_no):
            raise ValueError("KIS account number (CANO) must be 8 digits")
        if not _PRODUCT.match(product_code):
            raise ValueError("KIS account product code (ACNT_PRDT_CD) must be 2 digits")
        self.paper = paper
        self.base_url = (base_url or (PAPER_BASE_URL if paper else REAL_BASE_URL)).rstrip("/")
        self.clock: Clock = clock or SystemClock()
        self._app_key = app_key
        self._app_secret = app_secret
        self._account_no = account_no
        self._product_code = product_code
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self.rate_per_s = rate_per_s or (PAPER_RATE_PER_S if paper else REAL_RATE_PER_S)
        self.limiter = limiter or limiter_for(app_key, self.rate_per_s, margin=RATE_WINDOW_MARGIN_S)
        self.tokens = TokenManager(
            self._client,
            self.base_url,
            app_key,
            app_secret,
            store=token_store,
            clock=self.clock,
            margin=token_margin,
        )
        self.max_rate_retries = max_rate_retries
        self.backoff_base = backoff_base
        self.key_id = key_id(app_key)

    def __repr__(self) -> str:  # no key, secret or account number
        mode = "paper" if self.paper else "real"
        return f"KisRest({mode}, app_key=<{self.key_id}>, base_url={self.base_url!r})"

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> KisRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the one request path --------------------------------------------------------

    def _headers(self, token: str, tr_id: str, tr_cont: str) -> dict[str, str]:
        return {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {token}",
            "appkey": self._app_key,
            "appsecret": self._app_secret,
            "tr_id": tr_id,
            "custtype": "P",
            "tr_cont": tr_cont,
        }

    def _backoff(self, attempt: int) -> float:
        """Exponential with full jitter, so callers of one key do not retry in lockstep."""
        ceiling = min(5.0, self.backoff_base * (2**attempt))
        return ceiling * (0.5 + random.random() / 2)

    async def _request(
        self,
        method: str,
        path: str,
        tr_id: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, str] | None = None,
        tr_cont: str = "",
        order: bool = False,
        symbol: str = "",
    ) -> tuple[Any, str]:
        """Send one call; returns the validated-OK body and the response ``tr_cont``."""
        tr = trids.for_mode(tr_id, self.paper)
        url = f"{self.base_url}{path}"
        content = json.dumps(body, ensure_ascii=False).encode("utf-8") if body else None
        auth_retried = False
        rate_retries = 0
        while True:
            token = await self.tokens.token()
            try:
                async with self.limiter.slot():
                    response = await self._client.request(
                        method,
                        url,
                        params=params,
                        content=content,
                        headers=self._headers(token, tr, tr_cont),
                    )
            except httpx.TimeoutException as exc:
                unknown = " (order outcome unknown: check orders before resending)" if order else ""
                raise BrokerUnavailable(f"KIS {tr} timed out{unknown}") from exc
            except httpx.HTTPError as exc:
                raise BrokerUnavailable(f"KIS unreachable: {type(exc).__name__}") from exc
            status_code = response.status_code
            try:
                data = decode_json(response.content)
                status = parse_status(data)
            except MalformedResponse:
                if status_code >= 500:
                    raise BrokerUnavailable(f"KIS {tr}: HTTP {status_code}") from None
                raise
            if status.ok:
                if status_code >= 400:
                    raise BrokerUnavailable(f"KIS {tr}: HTTP {status_code} with rt_cd 0")
                return data, response.headers.get("tr_cont", "")
            code = status.code
            if code == RATE_LIMITED:
                if rate_retries >= self.max_rate_retries:
                    log.warning("KIS %s still rate limited after %d retries", tr, rate_retries)
                    raise RateLimited(f"KIS {code}: {status.message}", retry_after=1.0)
                delay = self._backoff(rate_retries)
                rate_retries += 1
                log.info("KIS %s rate limited (HTTP %d); retry in %.2f s", tr, status_code, delay)
                self.limiter.pause(delay)
                continue
            if code == TOKEN_EXPIRED:
                if auth_retried:
                    raise AuthExpired(f"KIS {code}: token expired again right after a re-issue")
                auth_retried = True
                log.info("KIS %s: token expired (HTTP %d); re-issuing once", tr, status_code)
                await self.tokens.expired(token)
                continue
            if code == INVALID_TOKEN:
                raise AuthExpired(f"KIS {code}: {status.message}")
            if code in (MARKET_CLOSED, UNKNOWN_SYMBOL) or (
                status_code < 500 and not status.gateway
            ):
                raise business_error(code, status.message, order=order, symbol=symbol)
            if status_code >= 500:
                raise BrokerUnavailable(f"KIS {tr}: {code} {status.message}".strip())
            raise KisApiError(code, status.message)

    async def _pages(
        self,
        path: str,
        tr_id: str,
        params: Mapping[str, str],
        parse: Callable[[Any], PageT],
    ) -> list[PageT]:
        """Every page of a ``tr_cont``-paged query: ``F``/``M`` means more, and the next
        request sends the body's ``CTX_AREA_*`` back with header ``tr_cont: N``."""
        pages: list[PageT] = []
        fk = nk = ""
        tr_cont = ""
        for _ in range(MAX_PAGES):
            query = {**params, "CTX_AREA_FK100": fk, "CTX_AREA_NK100": nk}
            data, cont = await self._request("GET", path, tr_id, params=query, tr_cont=tr_cont)
            page = parse(data)
            pages.append(page)
            if not more_pages(cont):
                return pages
            if (page.ctx_fk, page.ctx_nk) == (fk, nk):
                raise malformed(f"{tr_id}: tr_cont {cont!r} but the paging context did not move")
            fk, nk, tr_cont = page.ctx_fk, page.ctx_nk, "N"
        raise malformed(f"{tr_id}: more than {MAX_PAGES} pages")

    # --- market data -----------------------------------------------------------------

    @staticmethod
    def _check_symbol(symbol: str) -> None:
        if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
            raise UnknownSymbol(symbol)

    async def quote(self, symbol: str) -> Quote:
        """The day's snapshot (``FHKST01010100``). ``ts`` is when we asked."""
        self._check_symbol(symbol)
        data, _ = await self._request(
            "GET",
            Paths.PRICE,
            trids.PRICE,
            params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": symbol},
            symbol=symbol,
        )
        return parse_quote(data, symbol, self.clock.now())

    async def candles(
        self, symbol: str, period: CandlePeriod, start: date, end: date
    ) -> list[Candle]:
        """Bars from ``start`` to ``end`` (KST dates, inclusive), oldest first.

        Day and week bars come 100 a call, newest first, so the walk moves
        ``FID_INPUT_DATE_2`` back before the oldest bar received until ``start`` is
        covered or KIS has nothing older. Minute bars are fetched day by day
        (:meth:`minute_candles`, weekends skipped). Month bars raise
        :class:`Unsupported`: ``engines.market`` has no month timeframe.
        """
        self._check_symbol(symbol)
        period = CandlePeriod(period)
        if start > end:
            return []
        if period is CandlePeriod.MINUTE:
            out: list[Candle] = []
            day = start
            while day <= end:
                if day.weekday() < 5:
                    out.extend(await self.minute_candles(symbol, day))
                day += timedelta(days=1)
            return out
        if period is CandlePeriod.MONTH:
            raise Unsupported("month bars: engines.market has no month timeframe")
        tf = timeframe_of(period)
        bars: dict[datetime, Candle] = {}
        date2 = end
        for _ in range(MAX_PAGES):
            data, _ = await self._request(
                "GET",
                Paths.DAILY_CANDLES,
                trids.DAILY_CANDLES,
                params={
                    "FID_COND_MRKT_DIV_CODE": "J",
                    "FID_INPUT_ISCD": symbol,
                    "FID_INPUT_DATE_1": start.strftime("%Y%m%d"),
                    "FID_INPUT_DATE_2": date2.strftime("%Y%m%d"),
                    "FID_PERIOD_DIV_CODE": period.value,
                    "FID_ORG_ADJ_PRC": "0",
                },
                symbol=symbol,
            )
            rows = parse_daily_candles(data, symbol, period)
            if not rows:
                break
            for bar in rows:
                bars.setdefault(bar.start, bar)
            oldest = min(bar.start for bar in rows).astimezone(KST).date()
            if oldest <= start:
                break
            next_date2 = oldest - timedelta(days=1)
            if next_date2 >= date2:
                raise malformed(f"{trids.DAILY_CANDLES}: paging did not move before {date2}")
            date2 = next_date2
        else:
            raise malformed(f"{trids.DAILY_CANDLES}: more than {MAX_PAGES} pages")
        span_days = tf.span.days
        return sorted(
            (
                bar
                for bar in bars.values()
                if (d := bar.start.astimezone(KST).date()) <= end
                and d + timedelta(days=span_days - 1) >= start
            ),
            key=lambda bar: bar.start,
        )

    async def minute_candles(
        self,
        symbol: str,
        day: date,
        until_hhmmss: str | None = None,
        *,
        since: datetime | None = None,
        include_forming: bool = False,
    ) -> list[Candle]:
        """1-minute bars of ``day`` (KST) up to ``until_hhmmss``, oldest first, no duplicates.

        Today's bars come from ``FHKST03010200`` (30 a call), earlier days' from
        ``FHKST03010230`` (120 a call); both are walked back by moving
        ``FID_INPUT_HOUR_1`` before the oldest bar received. ``until_hhmmss`` defaults
        to now for today and to 18:00 (the end of after-hours trading) for past
        days. Today's bar that is still forming is left out unless
        ``include_forming`` (a successor runner seeds its forming bar from it).
        ``since`` ends the walk once it is covered and drops older bars, so a
        takeover a few minutes after the last stored bar costs one call, not a day's.
        """
        self._check_symbol(symbol)
        now = self.clock.now()
        today = now.astimezone(KST).date()
        if day > today:
            return []
        past = day < today
        if until_hhmmss is None:
            until_hhmmss = "180000" if past else now.astimezone(KST).strftime("%H%M%S")
        if not isinstance(until_hhmmss, str) or not _HHMMSS.match(until_hhmmss):
            raise Unsupported(f"until_hhmmss must be HHMMSS, got {until_hhmmss!r}")
        until = datetime.combine(day, _hhmmss(until_hhmmss), tzinfo=KST)
        if past:
            path, tr_id = Paths.MINUTE_PAST, trids.MINUTE_CANDLES_PAST
            fixed = {
                "FID_COND_MRKT_DIV_CODE": "J",
                "FID_INPUT_ISCD": symbol,
                "FID_INPUT_DATE_1": day.strftime("%Y%m%d"),
                "FID_PW_DATA_INCU_YN": "Y",
                "FID_FAKE_TICK_INCU_YN": "",
            }
        else:
            path, tr_id = Paths.MINUTE_TODAY, trids.MINUTE_CANDLES_TODAY
            fixed = {
                "FID_ETC_CLS_CODE": "",
                "FID_COND_MRKT_DIV_CODE": "J",
                "FID_INPUT_ISCD": symbol,
                "FID_PW_DATA_INCU_YN": "N",
            }
        bars: dict[datetime, Candle] = {}
        cursor = until_hhmmss
        for _ in range(MAX_PAGES):
            data, _ = await self._request(
                "GET", path, tr_id, params={**fixed, "FID_INPUT_HOUR_1": cursor}, symbol=symbol
            )
            rows = parse_minute_candles(data, symbol)
            same_day = [bar for bar in rows if bar.start.astimezone(KST).date() == day]
            for bar in same_day:
                if bar.start <= until:
                    bars.setdefault(bar.start, bar)
            if not same_day or len(same_day) < len(rows):
                break  # nothing more, or the walk reached the previous day
            oldest = min(bar.start for bar in same_day).astimezone(KST)
            if oldest.time() == time(0, 0) or (since is not None and oldest <= since):
                break
            next_cursor = (oldest - timedelta(seconds=1)).strftime("%H%M%S")
            if next_cursor >= cursor:
                raise malformed(f"{tr_id}: paging did not move before {cursor}")
            cursor = next_cursor
        else:
            raise malformed(f"{tr_id}: more than {MAX_PAGES} pages")
        if not past and not include_forming:
            bars = {s: b for s, b in bars.items() if s + Timeframe.M1.span <= now}
        return [bars[s] for s in sorted(bars) if since is None or s >= since]

    # --- account ---------------------------------------------------------------------

    def _account(self) -> dict[str, str]:
        if not self._account_no:
            raise BrokerError("this KIS connection has no account number")
        return {"CANO": self._account_no, "ACNT_PRDT_CD": self._product_code}

    async def balance(self) -> Balance:
        """Cash (``dnca_tot_amt``) and every holding, over all pages."""
        params = {
            **self._account(),
            "AFHR_FLPR_YN": "N",
            "OFL_YN": "",
            "INQR_DVSN": "02",
            "UNPR_DVSN": "01",
            "FUND_STTL_ICLD_YN": "N",
            "FNCG_AMT_AUTO_RDPT_YN": "N",
            "PRCS_DVSN": "00",
        }
        pages = await self._pages(Paths.BALANCE, trids.BALANCE, params, parse_balance_page)
        positions: list[Position] = [p for page in pages for p in page.positions]
        cash = next((page.cash for page in pages if page.cash is not None), None)
        if cash is None:
            raise malformed(f"{trids.BALANCE}: no account summary (output2) on any page")
        return Balance(cash, tuple(positions))

    async def _ccld(self, day: date, filled_only: bool) -> list[CcldPage]:
        ymd = day.strftime("%Y%m%d")
        params = {
            **self._account(),
            "INQR_STRT_DT": ymd,
            "INQR_END_DT": ymd,
            "SLL_BUY_DVSN_CD": "00",
            "INQR_DVSN": "00",
            "PDNO": "",
            "CCLD_DVSN": "01" if filled_only else "00",
            "ORD_GNO_BRNO": "",
            "ODNO": "",
            "INQR_DVSN_3": "00",
            "INQR_DVSN_1": "",
        }
        return await self._pages(Paths.DAILY_CCLD, trids.DAILY_FILLS, params, parse_ccld_page)

    async def orders(self, day: date) -> list[OrderStatus]:
        """Every order of ``day`` (KST) with its fill state (``inquire-daily-ccld``)."""
        pages = await self._ccld(day, filled_only=False)
        return [order_status_of(row) for page in pages for row in page.rows]

    async def fills(self, day: date) -> list[Fill]:
        """Executions of ``day``, one aggregated Fill per order (what the query reports)."""
        pages = await self._ccld(day, filled_only=True)
        fills = (fill_of(row) for page in pages for row in page.rows)
        return [f for f in fills if f is not None]

    # --- orders ----------------------------------------------------------------------

    @staticmethod
    def _check_qty(qty: object) -> int:
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            raise InvalidOrder(f"quantity must be a positive whole number, got {qty!r}")
        return qty

    @staticmethod
    def _check_price(price: object) -> int:
        if isinstance(price, bool) or not isinstance(price, int) or not is_on_tick(price):
            raise InvalidOrder(f"limit price {price!r} is not on the KRX tick grid")
        return price

    @staticmethod
    def _check_ack(ack: OrderAck) -> None:
        if not isinstance(ack.order_id, str) or not ack.order_id.isdigit():
            raise InvalidOrder(f"not a KIS order number: {ack.order_id!r}")

    def _today(self) -> date:
        return self.clock.now().astimezone(KST).date()

    async def _send_order(self, path: str, tr_id: str, body: dict[str, str], cid: str) -> OrderAck:
        symbol = body.get("PDNO", "")
        data, _ = await self._request("POST", path, tr_id, body=body, order=True, symbol=symbol)
        return parse_order_ack(data, self._today(), cid)

    async def place_order(self, order: OrderRequest) -> OrderAck:
        """A cash order (``TTTC0012U`` buy / ``TTTC0011U`` sell; ``V...`` on paper)."""
        self._check_symbol(order.symbol)
        try:
            side = OrderSide(order.side)
            order_type = OrderType(order.order_type)
        except ValueError:
            raise InvalidOrder(
                f"unknown side or order type: {order.side!r}/{order.order_type!r}"
            ) from None
        qty = self._check_qty(order.qty)
        price = 0 if order_type is OrderType.MARKET else self._check_price(order.price)
        body = {
            **self._account(),
            "PDNO": order.symbol,
            "ORD_DVSN": "01" if order_type is OrderType.MARKET else "00",
            "ORD_QTY": str(qty),
            "ORD_UNPR": str(price),
        }
        tr_id = trids.BUY if side is OrderSide.BUY else trids.SELL
        ack = await self._send_order(Paths.ORDER, tr_id, body, order.client_order_id)
        log.info(
            "KIS order %s accepted: %s %s %d @ %s (%s)",
            ack.order_id,
            side.value,
            order.symbol,
            qty,
            price or "market",
            "paper" if self.paper else "real",
        )
        return ack

    async def modify_order(self, ack: OrderAck, qty: int, price: int) -> OrderAck:
        """Change an open limit order to ``qty`` shares at ``price`` (``RVSE_CNCL_DVSN_CD`` 01)."""
        self._check_ack(ack)
        body = {
            **self._account(),
            "KRX_FWDG_ORD_ORGNO": ack.branch,
            "ORGN_ODNO": ack.order_id,
            "ORD_DVSN": "00",
            "RVSE_CNCL_DVSN_CD": "01",
            "ORD_QTY": str(self._check_qty(qty)),
            "ORD_UNPR": str(self._check_price(price)),
            "QTY_ALL_ORD_YN": "N",
        }
        return await self._send_order(
            Paths.REVISE_CANCEL, trids.REVISE_CANCEL, body, ack.client_order_id
        )

    async def cancel_order(self, ack: OrderAck, qty: int | None = None) -> OrderAck:
        """Cancel ``qty`` shares, or all that remain (``QTY_ALL_ORD_YN`` Y) when None."""
        self._check_ack(ack)
        body = {
            **self._account(),
            "KRX_FWDG_ORD_ORGNO": ack.branch,
            "ORGN_ODNO": ack.order_id,
            "ORD_DVSN": "00",
            "RVSE_CNCL_DVSN_CD": "02",
            "ORD_QTY": "0" if qty is None else str(self._check_qty(qty)),
            "ORD_UNPR": "0",
            "QTY_ALL_ORD_YN": "Y" if qty is None else "N",
        }
        return await self._send_order(
            Paths.REVISE_CANCEL, trids.REVISE_CANCEL, body, ack.client_order_id
        )


def _hhmmss(text: str) -> time:
    return time(int(text[:2]), int(text[2:4]), int(text[4:]))
