"""The symbol page at ``/symbol?code=005930``: candlesticks, volume, overlays, alert levels.

The figure is rebuilt when a bar closes and, for the bar still forming, at most
once per ``CHART_PUSH_INTERVAL`` seconds and only if it changed: a ``go.Figure`` is
sent whole on every change, so a per-tick redraw would flood a phone. While the
page is open it declares interest in the symbol to the runner (consumer
``chart:<client token>``), so a symbol nobody watches still streams live.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import plotly.graph_objects as go
import reflex as rx
from plotly.subplots import make_subplots

from app import db
from app.components.candles import bar_labels, candlestick, volume_colors
from app.config import get_settings
from app.runtime.live_bus import INTEREST_TTL, get_live_bus
from app.services import chart as chart_service
from app.services import symbols as symbols_service
from app.states.live import SymbolLiveState
from app.states.live_fanout import FANOUT
from app.states.session import SessionState
from engines.market import Candle, Timeframe, change_pct

log = logging.getLogger(__name__)
MAX_LIVE_SECONDS = 4 * 3600
"""A chart left open in a forgotten tab stops updating after this long; reloading resumes."""

OVERLAY_STYLE = {
    "ma20": ("#f5a623", "MA20"),
    "ma60": ("#8e4ec6", "MA60"),
}


def build_figure(
    candles: list[Candle],
    overlays: list[str],
    levels: list[chart_service.ChartLevel],
) -> go.Figure:
    """Price on top, volume below, on a categorical x axis (no gaps for nights)."""
    x = bar_labels(candles)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.76, 0.24])
    fig.add_trace(candlestick(candles, x), row=1, col=1)
    for kind in overlays:
        lines = chart_service.overlay(candles, kind)
        if kind == "bb":
            for name, dash in (("upper", "dot"), ("mid", "solid"), ("lower", "dot")):
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=lines[name],
                        mode="lines",
                        line={"color": "#12a594", "width": 1, "dash": dash},
                        name=f"BB {name}",
                        hoverinfo="skip",
                        showlegend=False,
                    ),
                    row=1,
                    col=1,
                )
            continue
        color, label = OVERLAY_STYLE[kind]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=lines["value"],
                mode="lines",
                line={"color": color, "width": 1.4},
                name=label,
                showlegend=False,
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Bar(
            x=x,
            y=[c.volume for c in candles],
            marker={"color": volume_colors(candles)},
            name="",
            showlegend=False,
        ),
        row=2,
        col=1,
    )
    for level in levels:
        fig.add_hline(
            y=level.price,
            line={"color": "#f5a623", "width": 1, "dash": "dash"},
            annotation_text=f"{level.price:,.0f}",
            annotation_position="top left",
            annotation_font_size=10,
            row=1,
            col=1,
        )
    fig.update_layout(
        height=420,
        autosize=True,
        margin={"l": 52, "r": 8, "t": 8, "b": 32},
        dragmode="pan",
        uirevision="keep",  # the user's zoom survives live updates
        xaxis={"type": "category", "rangeslider": {"visible": False}, "nticks": 6},
        xaxis2={"type": "category", "nticks": 6},
        yaxis={"tickformat": ",d"},
        yaxis2={"tickformat": "~s"},
    )
    return fig


def _client_connected(token: str) -> bool:
    """Whether a browser tab with this token is still connected (single-process
    token manager; with Redis the loop's time limit ends a stale loop instead)."""
    try:
        from reflex.utils.prerequisites import get_app

        namespace = get_app().app.event_namespace
    except Exception:
        return True
    if namespace is None:
        return True
    try:
        return token in namespace.token_to_sid
    except Exception:
        return True


class ChartState(rx.State):
    code: str = ""
    name_ko: str = ""
    name_en: str = ""
    market: str = ""
    timeframe: str = "1d"
    overlays: list[str] = ["ma20"]
    figure: go.Figure = go.Figure()
    price: str = ""
    change: str = ""
    change_pct: str = ""
    direction: str = "flat"
    bars: int = 0
    levels: int = 0
    not_found: bool = False
    _generation: int = 0
    _signature: tuple = ()
    _moved: tuple = ()

    @rx.var
    def timeframes(self) -> list[str]:
        return [tf.value for tf in chart_service.CHART_TIMEFRAMES]

    async def _user_id(self) -> int | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        return None if user is None else user.id

    @rx.event
    async def load(self) -> list[rx.event.EventSpec] | None:
        user_id = await self._user_id()
        if user_id is None:
            return rx.redirect("/login")
        raw = self.router.url.query_parameters.get("code", "")
        code = str(raw).strip()[:12]
        async with db.session() as s:
            found = await symbols_service.search(s, code, limit=1) if code else []
        if not found or found[0].code != code:
            self.not_found = True
            self.code = code
            self.figure = go.Figure()
            return None
        sym = found[0]
        self.not_found = False
        self.code, self.name_ko, self.name_en, self.market = (
            sym.code,
            sym.name_ko,
            sym.name_en,
            sym.market,
        )
        if self.timeframe not in self.timeframes:
            self.timeframe = Timeframe.D1.value
        self._generation += 1
        self._signature = ()
        self._moved = ()
        await self._render(user_id)
        await _declare(self._consumer(), [self.code])
        return [ChartState.follow(self._generation), SymbolLiveState.follow(self.code)]

    def _consumer(self) -> str:
        return f"chart:{self.router.session.client_token}"

    async def _render(self, user_id: int, *, live: bool = False) -> bool:
        """Rebuild the figure if anything it shows changed; True if it did.

        ``live`` (the follow loop) first compares what the runner holds in memory
        (the forming bar, unsaved closed bars, the last price) and skips the
        database entirely when none of it moved: an open chart on a quiet symbol
        costs no queries.
        """
        tf = Timeframe(self.timeframe)
        pending: list[Candle] = []
        forming = None
        try:
            quote = await get_live_bus().snapshot(self.code)
        except Exception as exc:  # the chart still shows what is stored
            log.warning("live snapshot of %s unavailable: %r", self.code, exc)
            quote = None
        if quote is not None:
            pending, forming = quote.pending.get(tf, []), quote.forming.get(tf)
        moved = (
            self.timeframe,
            tuple(self.overlays),
            forming,
            pending[-1] if pending else None,
            None if quote is None else quote.price,
        )
        if live and moved == self._moved:
            return False
        self._moved = moved
        async with db.session() as s:
            candles = await chart_service.series(s, self.code, tf, pending=pending, forming=forming)
            levels = await chart_service.alert_levels(s, user_id, self.code)
        last = candles[-1] if candles else None
        signature = (
            moved,
            len(candles),
            last,
            tuple(lv.price for lv in levels),
        )
        if signature == self._signature:
            return False
        self._signature = signature
        self.figure = build_figure(candles, list(self.overlays), levels)
        self.bars = len(candles)
        self.levels = len(levels)
        if quote is not None:
            diff = quote.price - quote.prev_close
            self.price = f"{quote.price:,}"
            self.change = f"{diff:+,}"
            self.change_pct = f"{change_pct(quote.price, quote.prev_close):+.2f}%"
            self.direction = "up" if diff > 0 else "down" if diff < 0 else "flat"
        elif last is not None:
            self.price = f"{last.close:,}"
        return True

    @rx.event
    async def set_timeframe(self, value: str) -> None:
        if value not in self.timeframes:
            return
        self.timeframe = value
        user_id = await self._user_id()
        if user_id is not None and self.code and not self.not_found:
            await self._render(user_id)

    @rx.event
    async def toggle_overlay(self, kind: str) -> None:
        if kind not in chart_service.OVERLAYS:
            return
        current = list(self.overlays)
        self.overlays = [k for k in current if k != kind] if kind in current else [*current, kind]
        user_id = await self._user_id()
        if user_id is not None and self.code and not self.not_found:
            await self._render(user_id)

    @rx.event
    async def leave(self) -> None:
        self._generation += 1
        FANOUT.unfollow_symbol(self.router.session.client_token)
        await _declare(self._consumer(), [])

    @rx.event(background=True)
    async def follow(self, generation: int) -> None:
        """Coalesced live updates until the page is left, reloaded or abandoned."""
        interval = get_settings().chart_push_interval
        started = datetime.now().timestamp()
        token = self.router.session.client_token
        declared = started
        try:
            while datetime.now().timestamp() - started < MAX_LIVE_SECONDS:
                await asyncio.sleep(interval)
                if not _client_connected(token):
                    break
                async with self:
                    if self._generation != generation or self.not_found:
                        return
                    if datetime.now().timestamp() - declared > INTEREST_TTL / 3:
                        declared = datetime.now().timestamp()
                        await _declare(self._consumer(), [self.code])
                    user_id = await self._user_id()
                    if user_id is None:
                        return
                    await self._render(user_id, live=True)
        except Exception:
            log.exception("chart updates for %s stopped", self.code)
        await _declare(f"chart:{token}", [])


async def _declare(consumer: str, codes: list[str]) -> None:
    """Tell the runner (wherever it runs) what this chart needs streamed; a bus that
    is down costs the live updates, never the page."""
    try:
        await get_live_bus().declare(consumer, codes)
    except Exception as exc:
        log.warning("could not declare chart interest %s: %r", consumer, exc)
