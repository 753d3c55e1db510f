"""Kiwoom REST: one POST per call, typed results, Kiwoom's errors as BrokerErrors.

Every Kiwoom REST call is a ``POST`` of a JSON body with the headers ``api-id``
(which TR to run), ``authorization: Bearer <token>`` and, for continued queries,
``cont-yn: Y`` plus the ``next-key`` the previous page returned in its own
``cont-yn``/``next-key`` response headers. Every reply carries ``return_code``
(0 is success) and ``return_msg``, whatever the HTTP status.

Error policy (see :meth:`KiwoomRest.call`):

* ``1700`` (too many requests): pause the whole limiter for a jittered, growing
  backoff and retry, at most ``max_rate_retries`` times, then :class:`RateLimited`.
  Safe for orders too: a refused request was never processed.
* ``8005`` (token invalid) or HTTP 401: drop the token, issue a new one once and
  retry once, then :class:`AuthExpired`.
* HTTP 5xx, timeouts, connection errors: :class:`BrokerUnavailable`, never retried
  here. An order that timed out may have been placed, so only the caller, who can
  look at the day's orders, may decide to send it again.
* Any other non-zero code: :class:`OrderRejected` (with ``return_msg``) for orders,
  :class:`KiwoomApiError` for queries.
* A body we cannot read: :class:`MalformedResponse`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx

from brokers.base import (
    AuthExpired,
    Balance,
    BrokerError,
    BrokerUnavailable,
    OrderAck,
    OrderRejected,
    OrderRequest,
    OrderSide,
    OrderType,
    Quote,
    RateLimited,
    UnknownSymbol,
)
from brokers.kiwoom.auth import AccessToken, TokenManager, TokenStore
from brokers.kiwoom.parsing import (
    MalformedResponse,
    parse_balance_page,
    parse_daily_page,
    parse_expires_dt,
    parse_order_ack,
    parse_quote,
    return_code,
)
from brokers.ratelimit import SlidingWindowLimiter
from engines.market import Candle, is_on_tick

__all__ = [
    "AUTH_EXPIRED_CODES",
    "RATE_LIMIT_CODE",
    "CredentialsRejected",
    "KiwoomApiError",
    "KiwoomRest",
    "Page",
]

log = logging.getLogger(__name__)

RATE_LIMIT_CODE = 1700
"""``허용된 요청 개수를 초과하였습니다``: too many requests for this app key."""

AUTH_EXPIRED_CODES = frozenset({8005})
"""``Token이 유효하지 않습니다``: the token expired or was revoked; issue a new one."""

PATH_TOKEN = "/oauth2/token"
PATH_STKINFO = "/api/dostk/stkinfo"
PATH_CHART = "/api/dostk/chart"
PATH_ACCOUNT = "/api/dostk/acnt"
PATH_ORDER = "/api/dostk/ordr"

EXCHANGE = "KRX"
"""``dmst_stex_tp``: we route every order to KRX (the mock server supports nothing else)."""

_TRDE_TP = {OrderType.LIMIT: "0", OrderType.MARKET: "3"}
_ORDER_API = {OrderSide.BUY: "kt10000", OrderSide.SELL: "kt10001"}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class KiwoomApiError(BrokerError):
    """Kiwoom refused a query with a code we have no more specific class for."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"Kiwoom {code}: {message}".strip())
        self.code = code
        self.message = message


class CredentialsRejected(AuthExpired):
    """Kiwoom refused the app key / secret key pair when issuing a token."""


@dataclass(frozen=True, slots=True)
class Page:
    """One reply: its body and whether (and how) to ask for the next page."""

    body: Mapping[str, Any]
    more: bool
    next_key: str


class KiwoomRest:
    """A Kiwoom REST client for one app key.

    ``rate_per_second`` is the client-side limit (sliding 1-second window, see
    :mod:`brokers.ratelimit`) shared by every call of this client, token
    issues included. ``client`` may be injected
    (tests, connection pooling); otherwise the client owns one.
    """

    def __init__(
        self,
        base_url: str,
        app_key: str,
        secret_key: str,
        *,
        store: TokenStore | None = None,
        client: httpx.AsyncClient | None = None,
        rate_per_second: int = 5,
        rate_margin: float = 0.0,
        max_rate_retries: int = 4,
        backoff_base: float = 0.25,
        backoff_max: float = 4.0,
        timeout: float = 10.0,
        max_pages: int = 50,
        clock: Callable[[], datetime] = _utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._app_key = app_key
        self._secret_key = secret_key
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout
        self.limiter = SlidingWindowLimiter(rate_per_second, margin=rate_margin)
        self._max_rate_retries = max_rate_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_pages = max_pages
        self._clock = clock
        self._rng = rng or random.Random()
        self.tokens = TokenManager(self._issue_token, store, clock=clock)

    def __repr__(self) -> str:
        return f"KiwoomRest({self._base!r}, app_key='{self._app_key[:4]}***')"

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    # -- transport ------------------------------------------------------------------

    async def _post(
        self, path: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, httpx.Headers, Any]:
        try:
            async with self.limiter.slot():
                response = await self._client.post(
                    self._base + path, json=dict(body), headers=dict(headers), timeout=self._timeout
                )
        except httpx.TimeoutException as exc:
            raise BrokerUnavailable(f"Kiwoom timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise BrokerUnavailable(f"Kiwoom unreachable ({type(exc).__name__})") from exc
        if response.status_code >= 500:
            raise BrokerUnavailable(f"Kiwoom answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            log.warning("kiwoom: %s answered HTTP %s, not JSON", path, response.status_code)
            raise MalformedResponse(f"{path}: not JSON (HTTP {response.status_code})") from None
        return response.status_code, response.headers, data

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, so clients throttled together do not
        retry together."""
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        return ceiling * self._rng.uniform(0.5, 1.0)

    async def _issue_token(self) -> AccessToken:
        body = {
            "grant_type": "client_credentials",
            "appkey": self._app_key,
            "secretkey": self._secret_key,
        }
        headers = {"content-type": "application/json;charset=UTF-8"}
        attempt = 0
        while True:
            status, _, data = await self._post(PATH_TOKEN, body, headers)
            code, msg = return_code(data)
            if code == RATE_LIMIT_CODE:
                attempt += 1
                if attempt > self._max_rate_retries:
                    raise RateLimited(f"token issue: {msg}")
                self.limiter.pause(self._backoff(attempt))
                continue
            if code != 0 or status >= 400:
                log.warning("kiwoom: token issue refused: %s %s", code, msg)
                raise CredentialsRejected(f"Kiwoom {code}: {msg}".strip())
            value = data.get("token")
            if not isinstance(value, str) or not value:
                raise MalformedResponse("token: missing")
            token_type = data.get("token_type")
            return AccessToken(
                value=value,
                expires_at=parse_expires_dt(data.get("expires_dt")),
                token_type=token_type if isinstance(token_type, str) else "Bearer",
            )

    async def call(
        self,
        api_id: str,
        path: str,
        body: Mapping[str, Any],
        *,
        next_key: str = "",
        is_order: bool = False,
    ) -> Page:
        """Run one TR and return its page, applying the error policy of this module."""
        reissued = False
        rate_attempt = 0
        while True:
            token = await self.tokens.token()
            headers = {
                "api-id": api_id,
                "authorization": token.header,
                "content-type": "application/json;charset=UTF-8",
            }
            if next_key:
                headers["cont-yn"] = "Y"
                headers["next-key"] = next_key
            status, response_headers, data = await self._post(path, body, headers)
            code, msg = return_code(data)
            if code == 0 and status < 400:
                more = response_headers.get("cont-yn", "N").strip().upper() == "Y"
                return Page(data, more, response_headers.get("next-key", "").strip())
            if code == RATE_LIMIT_CODE or status == 429:
                rate_attempt += 1
                if rate_attempt > self._max_rate_retries:
                    raise RateLimited(f"{api_id}: {msg}".strip())
                delay = self._backoff(rate_attempt)
                log.info("kiwoom: %s rate limited, retry %d in %.2fs", api_id, rate_attempt, delay)
                self.limiter.pause(delay)  # every call of the key holds back, not just this one
                continue
            if code in AUTH_EXPIRED_CODES or status == 401:
                if reissued:
                    raise AuthExpired(f"{api_id}: {msg}".strip())
                reissued = True
                log.info("kiwoom: %s: token refused (%s), issuing a new one", api_id, code)
                await self.tokens.invalidate(token)
                continue
            if is_order:
                raise OrderRejected(msg or f"Kiwoom {code}")
            raise KiwoomApiError(code, msg)

    async def pages(
        self, api_id: str, path: str, body: Mapping[str, Any]
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Every page of a continued query, following ``cont-yn``/``next-key``.

        Bounded by ``max_pages`` and guarded against a ``next-key`` that repeats, so a
        confused server cannot keep us paging forever.
        """
        key = ""
        seen: set[str] = set()
        for _ in range(self._max_pages):
            page = await self.call(api_id, path, body, next_key=key)
            yield page.body
            if not page.more:
                return
            if not page.next_key or page.next_key in seen:
                raise MalformedResponse(f"{api_id}: cont-yn=Y without a new next-key")
            seen.add(page.next_key)
            key = page.next_key
        raise MalformedResponse(f"{api_id}: more than {self._max_pages} pages")

    # -- queries --------------------------------------------------------------------

    async def quote(self, symbol: str) -> Quote:
        """ka10001. Kiwoom answers an unknown code with blank fields: :class:`UnknownSymbol`."""
        page = await self.call("ka10001", PATH_STKINFO, {"stk_cd": symbol})
        quote = parse_quote(page.body, symbol, self._clock())
        if quote is None:
            raise UnknownSymbol(symbol)
        return quote

    async def daily_candles(self, symbol: str, start: date, end: date) -> list[Candle]:
        """ka10081 from ``end`` back to ``start`` (inclusive), oldest first.

        Kiwoom pages backwards from ``base_dt``, newest row first; we stop as soon as
        a page reaches before ``start``. ``upd_stkpc_tp`` 1 asks for split-adjusted
        prices, so indicators and backtests do not see a split as a crash.
        """
        if start > end:
            return []
        body = {"stk_cd": symbol, "base_dt": end.strftime("%Y%m%d"), "upd_stkpc_tp": "1"}
        by_day: dict[date, Candle] = {}
        async with aclosing(self.pages("ka10081", PATH_CHART, body)) as pages:
            async for page in pages:
                rows = parse_daily_page(page, symbol)
                for day, candle in rows:
                    if start <= day <= end:
                        by_day[day] = candle
                if not rows or min(day for day, _ in rows) <= start:
                    break
        return [by_day[d] for d in sorted(by_day)]

    async def balance(self) -> Balance:
        """kt00004 (계좌평가현황요청), every page: deposits plus every holding."""
        body = {"qry_tp": "0", "dmst_stex_tp": EXCHANGE}
        cash: int | None = None
        positions = []
        async for page in self.pages("kt00004", PATH_ACCOUNT, body):
            page_cash, rows = parse_balance_page(page)
            if cash is None:
                cash = page_cash
            positions.extend(rows)
        return Balance(cash=cash or 0, positions=tuple(positions))

    # -- orders ---------------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> OrderAck:
        """kt10000 (buy) / kt10001 (sell), cash, on KRX.

        ``ord_uv`` is blank for market orders (Kiwoom ignores it there). Quantity and
        the tick grid are checked before sending: a malformed order costs no call.
        """
        if order.qty <= 0:
            raise OrderRejected(f"quantity must be positive, got {order.qty}")
        if order.order_type is OrderType.LIMIT and not is_on_tick(order.price):
            raise OrderRejected(f"limit price {order.price} is not on the KRX tick grid")
        body = {
            "dmst_stex_tp": EXCHANGE,
            "stk_cd": order.symbol,
            "ord_qty": str(order.qty),
            "ord_uv": str(order.price) if order.order_type is OrderType.LIMIT else "",
            "trde_tp": _TRDE_TP[order.order_type],
            "cond_uv": "",
        }
        page = await self.call(_ORDER_API[order.side], PATH_ORDER, body, is_order=True)
        return parse_order_ack(
            page.body, symbol=order.symbol, now=self._clock(), client_order_id=order.client_order_id
        )

    @staticmethod
    def _target(ack: OrderAck) -> tuple[str, str]:
        exchange, _, symbol = ack.branch.partition(":")
        if not exchange or not symbol:
            raise OrderRejected(f"order {ack.order_id}: not a Kiwoom order (branch {ack.branch!r})")
        return exchange, symbol

    async def modify_order(self, ack: OrderAck, qty: int, price: int) -> OrderAck:
        """kt10002: new quantity and price for an open limit order."""
        exchange, symbol = self._target(ack)
        if qty <= 0 or not is_on_tick(price):
            raise OrderRejected(f"modify: bad quantity {qty} or price {price}")
        body = {
            "dmst_stex_tp": exchange,
            "orig_ord_no": ack.order_id,
            "stk_cd": symbol,
            "mdfy_qty": str(qty),
            "mdfy_uv": str(price),
            "mdfy_cond_uv": "",
        }
        page = await self.call("kt10002", PATH_ORDER, body, is_order=True)
        return parse_order_ack(
            page.body, symbol=symbol, now=self._clock(), client_order_id=ack.client_order_id
        )

    async def cancel_order(self, ack: OrderAck, qty: int | None = None) -> OrderAck:
        """kt10003. ``cncl_qty`` "0" cancels whatever is still open."""
        exchange, symbol = self._target(ack)
        if qty is not None and qty <= 0:
            raise OrderRejected(f"cancel: quantity must be positive, got {qty}")
        body = {
            "dmst_stex_tp": exchange,
            "orig_ord_no": ack.order_id,
            "stk_cd": symbol,
            "cncl_qty": "0" if qty is None else str(qty),
        }
        page = await self.call("kt10003", PATH_ORDER, body, is_order=True)
        return parse_order_ack(
            page.body, symbol=symbol, now=self._clock(), client_order_id=ack.client_order_id
        )
