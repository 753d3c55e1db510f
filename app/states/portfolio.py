"""The portfolio page: cash, holdings, valuation and P&L, plus the paper order ticket.

Numbers are refreshed on demand (the refresh button, after an order) and every
``PORTFOLIO_REFRESH_SECONDS`` by each worker for the portfolio pages it serves
(:func:`refresh_open_pages`, started in ``app/app.py``). Only formatted strings reach the
browser: no credential, no token, no account number beyond its masked tail.
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

import reflex as rx
from reflex.istate.manager.token import BaseStateToken

from app import db
from app.config import get_settings
from app.runtime.live_bus import LiveQuotedMarket
from app.runtime.runner import current_runner
from app.services import paper_accounts, symbols
from app.services import portfolio as portfolio_service
from app.services.errors import NotFound, ServiceError, ValidationFailed
from app.states.pages import _error_text
from app.states.session import SessionState
from brokers.base import (
    AuthExpired,
    BrokerError,
    BrokerUnavailable,
    MarketData,
    RateLimited,
)
from brokers.paper.market import SimulatedMarket

log = logging.getLogger(__name__)
KST = ZoneInfo("Asia/Seoul")

_OPEN_PAGES: dict[str, int] = {}
"""client token -> user id of every open portfolio page, for the scheduled refresh."""

ORDER_FIELDS = ("symbol", "side", "order_type", "qty", "price")


def _market() -> MarketData:
    """The runner's market in its own process; elsewhere the leader's live prices over
    the bus, with the configured source for what the bus cannot answer."""
    runner = current_runner()
    if runner is not None:
        return runner.market
    global _worker_market
    if _worker_market is None:
        cfg = get_settings()
        fallback = SimulatedMarket(seed=cfg.market_seed, always_open=cfg.market_always_open)
        _worker_market = LiveQuotedMarket(fallback)
    return _worker_market  # type: ignore[return-value]


_worker_market: LiveQuotedMarket | None = None


def _pnl_dir(value: int | float) -> str:
    return "up" if value > 0 else "down" if value < 0 else "flat"


def _broker_error_code(exc: BrokerError) -> str:
    if isinstance(exc, RateLimited):
        return "portfolio_rate_limited"
    if isinstance(exc, AuthExpired):
        return "portfolio_auth"
    if isinstance(exc, BrokerUnavailable):
        return "portfolio_unavailable"
    return "portfolio_failed"


class PortfolioState(rx.State):
    sources: list[dict[str, str]] = []
    source: str = portfolio_service.PAPER
    summary: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    orders: list[dict[str, str]] = []
    fills: list[dict[str, str]] = []
    as_of: str = ""
    error: str = ""
    notice: str = ""
    form: dict[str, str] = {"side": "buy", "order_type": "limit"}
    field_errors: dict[str, str] = {}

    @rx.var
    def is_paper(self) -> bool:
        return self.source == portfolio_service.PAPER

    async def _user(self) -> tuple[SessionState, int | None]:
        session = await self.get_state(SessionState)
        user = await session._user()
        return session, None if user is None else user.id

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        session, user_id = await self._user()
        if user_id is None:
            return rx.redirect("/login")
        async with db.session() as s:
            found = await portfolio_service.sources(s, user_id)
        paper_label = session._t("portfolio.source.paper")
        self.sources = [{"key": f.key, "label": f.label or paper_label} for f in found]
        if self.source not in {f.key for f in found}:
            self.source = portfolio_service.PAPER
        code = str(self.router.url.query_parameters.get("symbol", "")).strip()[:12]
        if code:
            self.form = {**self.form, "symbol": code}
        _OPEN_PAGES[self.router.session.client_token] = user_id
        await self._refresh(session, user_id)
        return None

    @rx.event
    async def refresh(self) -> rx.event.EventSpec | None:
        session, user_id = await self._user()
        if user_id is None:
            return rx.redirect("/login")
        await self._refresh(session, user_id)
        return None

    @rx.event
    async def choose_source(self, key: str) -> None:
        session, user_id = await self._user()
        if user_id is None:
            return
        try:
            async with db.session() as s:
                self.source = await portfolio_service.check_source(
                    s, user_id, str(key), session._ip()
                )
        except NotFound:
            self.error = session._t("error.not_found")
            return
        except ValidationFailed as exc:
            (code, params), *_ = exc.field_errors.values()
            self.error = _error_text(session, code, params)
            return
        self.notice = ""
        await self._refresh(session, user_id)

    @rx.event
    def leave(self) -> None:
        _OPEN_PAGES.pop(self.router.session.client_token, None)

    async def _refresh(self, session: SessionState, user_id: int) -> None:
        try:
            async with db.session() as s:
                view = await portfolio_service.view(s, user_id, self.source, _market())
                if self.source == portfolio_service.PAPER:
                    orders = await paper_accounts.list_orders(s, user_id, limit=20)
                    fills = await paper_accounts.list_fills(s, user_id, limit=10)
                else:
                    orders, fills = [], []
        except NotFound:
            self.source = portfolio_service.PAPER
            self.error = session._t("error.not_found")
            return
        except ValidationFailed as exc:
            (code, params), *_ = exc.field_errors.values()
            self.error = _error_text(session, code, params)
            return
        except BrokerError as exc:
            self.error = session._t(f"error.{_broker_error_code(exc)}")
            return
        except ServiceError as exc:
            self.error = _error_text(session, exc.code, exc.params)
            return
        self.error = ""
        balance = view.balance
        names = await self._names([p.symbol for p in balance.positions], session.ui_lang)
        self.summary = {
            "cash": f"{balance.cash:,}",
            "orderable": f"{view.orderable_cash:,}",
            "holdings": f"{balance.holdings_value:,}",
            "total": f"{balance.total:,}",
            "unrealized": f"{balance.pnl:+,}",
            "unrealized_pct": f"{view.unrealized_pct:+.2f}%",
            "unrealized_dir": _pnl_dir(balance.pnl),
            "realized": "" if view.realized_pnl is None else f"{view.realized_pnl:+,}",
            "realized_dir": _pnl_dir(view.realized_pnl or 0),
            "total_pnl": "" if view.total_pnl is None else f"{view.total_pnl:+,}",
            "total_pnl_dir": _pnl_dir(view.total_pnl or 0),
        }
        self.rows = [
            {
                "symbol": p.symbol,
                "name": names.get(p.symbol, p.name or p.symbol),
                "qty": f"{p.qty:,}",
                "avg": f"{p.avg_price:,.0f}",
                "price": f"{p.price:,}",
                "value": f"{p.value:,}",
                "pnl": f"{p.pnl:+,}",
                "pnl_pct": f"{p.pnl_pct:+.2f}%",
                "dir": _pnl_dir(p.pnl),
            }
            for p in balance.positions
        ]
        self.orders = [
            {
                "id": o.order_id,
                "symbol": o.symbol,
                "side": session._t(f"portfolio.side.{o.side.value}"),
                "qty": f"{o.qty:,}",
                "price": f"{o.price:,}" if o.price else session._t("portfolio.type.market"),
                "state": session._t(f"portfolio.state.{o.state.value}"),
                "open": "1" if o.state.value in ("open", "partial") else "",
            }
            for o in orders
        ]
        self.fills = [
            {
                "symbol": f.symbol,
                "side": session._t(f"portfolio.side.{f.side.value}"),
                "qty": f"{f.qty:,}",
                "price": f"{f.price:,}",
                "fees": f"{f.commission + f.tax:,}",
                "time": f.ts.astimezone(KST).strftime("%m-%d %H:%M:%S"),
            }
            for f in fills
        ]
        self.as_of = view.as_of.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S")

    async def _names(self, codes: list[str], lang: str) -> dict[str, str]:
        if not codes:
            return {}
        out: dict[str, str] = {}
        async with db.session() as s:
            for code in codes:
                try:
                    sym = await symbols.resolve(s, code)
                except ServiceError:
                    continue
                out[code] = sym.name_en if lang == "en" else sym.name_ko
        return out

    # ---- paper order ticket ----------------------------------------------------------

    @rx.event
    def set_order_field(self, key: str, value: str) -> None:
        if key not in ORDER_FIELDS:
            return
        self.form = {**self.form, key: str(value)[:40]}
        self.field_errors = {k: v for k, v in self.field_errors.items() if k != key}

    @rx.event
    async def place(self, form_data: dict) -> rx.event.EventSpec | None:
        session, user_id = await self._user()
        if user_id is None:
            return rx.redirect("/login")
        values = {
            **self.form,
            **{k: str(form_data.get(k, "")) for k in ORDER_FIELDS if k in form_data},
        }
        self.form = values
        self.notice = ""
        try:
            async with db.session() as s:
                await paper_accounts.place_order(
                    s,
                    user_id,
                    _market(),
                    symbol=values.get("symbol", ""),
                    side=values.get("side", ""),
                    qty=values.get("qty", ""),
                    order_type=values.get("order_type", ""),
                    price=values.get("price", ""),
                )
        except ValidationFailed as exc:
            self.field_errors = {
                key: _error_text(session, code, params)
                for key, (code, params) in exc.field_errors.items()
            }
            return None
        except ServiceError as exc:
            self.field_errors = {"order": _error_text(session, exc.code, exc.params)}
            return None
        except BrokerError as exc:
            self.field_errors = {"order": session._t(f"error.{_broker_error_code(exc)}")}
            return None
        self.field_errors = {}
        self.form = {
            "side": values.get("side", "buy"),
            "order_type": values.get("order_type", "limit"),
            "symbol": values.get("symbol", ""),
        }
        self.notice = session._t("paper.order_placed")
        await self._refresh(session, user_id)
        return None

    @rx.event
    async def cancel(self, order_id: str) -> rx.event.EventSpec | None:
        session, user_id = await self._user()
        if user_id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await paper_accounts.cancel_order(s, user_id, _market(), order_id, ip=session._ip())
        except NotFound:
            self.error = session._t("error.paper_order_not_found")
            return None
        except ValidationFailed as exc:
            (code, params), *_ = exc.field_errors.values()
            self.error = _error_text(session, code, params)
            return None
        self.notice = session._t("paper.order_cancelled")
        await self._refresh(session, user_id)
        return None


async def refresh_open_pages(app: rx.App) -> int:
    """The scheduler's job: re-read every open portfolio page's numbers."""
    refreshed = 0
    for token, user_id in list(_OPEN_PAGES.items()):
        try:
            async with app.modify_state(BaseStateToken(ident=token, cls=PortfolioState)) as root:
                page = await root.get_state(PortfolioState)
                session = await root.get_state(SessionState)
                user = await session._user()
                if user is None or user.id != user_id:
                    _OPEN_PAGES.pop(token, None)  # signed out, or another user now
                    continue
                await page._refresh(session, user_id)
                refreshed += 1
        except Exception:
            log.exception("portfolio refresh of an open page failed")
            _OPEN_PAGES.pop(token, None)
    return refreshed
