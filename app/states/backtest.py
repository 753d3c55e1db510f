"""The backtest page (/backtest?config=ID): run, watch, and read backtests of one config.

Four tabs share one form: a backtest, a parameter optimisation, a walk-forward
and the parity report of one of the config's attachments. Starting any of them
only queues a row (``services.backtests`` validates and answers with field
errors); :mod:`app.runtime.backtest_jobs` runs it in a process pool. The page
then polls the row from a background event, so the event loop never waits on a
job, and draws the progress bar from the row's ``progress``.

Every handler, and every poll, resolves the user from the session cookie again;
a run or attachment id from the browser is only ever looked up among the
caller's own (the services refuse and audit anything else). Vars hold display
strings and small figures, nothing secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
import reflex as rx

from app import db
from app.components.equity_chart import equity_figure, trades_figure
from app.i18n import catalog
from app.runtime.backtest_jobs import current_jobs
from app.services import backtests
from app.services import candles as candle_store
from app.services import strategies as strategies_service
from app.services.errors import NotFound, ServiceError, ValidationFailed
from app.states.pages import _error_text
from app.states.session import SessionState
from app.states.strategies import _catalogue, _params_text, _title, param_message
from engines.market import Timeframe

log = logging.getLogger(__name__)
KST = ZoneInfo("Asia/Seoul")

TABS = ("backtest", "optimize", "walk_forward", "parity")
POLL_SECONDS = 0.7
MAX_WATCH_SECONDS = 3 * 3600
MAX_PRICE_BARS = 1_500
FORM_KEYS = (
    "symbols",
    "start",
    "end",
    "cash",
    "commission_pct",
    "tax_pct",
    "slippage_ticks",
    "method",
    "metric",
    "max_runs",
    "folds",
    "days",
    "attachment",
)
PERCENT = {
    "total_return",
    "cagr",
    "volatility",
    "max_drawdown",
    "win_rate",
    "exposure",
    "expectancy",
    "best_trade",
    "worst_trade",
    "benchmark_return",
}
RATIO = {"sharpe", "sortino", "calmar", "profit_factor"}
CARDS = (
    "total_return",
    "benchmark_return",
    "cagr",
    "max_drawdown",
    "sharpe",
    "sortino",
    "calmar",
    "volatility",
    "win_rate",
    "profit_factor",
    "expectancy",
    "trades",
    "exposure",
    "best_trade",
    "worst_trade",
    "max_drawdown_duration",
    "end_equity",
)
OPT_COLUMNS = ("total_return", "sharpe", "max_drawdown", "win_rate", "trades")


def metric_text(name: str, value: Any) -> str:
    """A metric as the cards show it: fractions as percent, ratios to two places."""
    if value is None:
        return "-"
    if name in PERCENT:
        return f"{float(value) * 100:+.2f}%" if name != "win_rate" else f"{value * 100:.1f}%"
    if name in RATIO:
        return f"{float(value):.2f}"
    if name in ("end_equity", "start_equity"):
        return f"{float(value):,.0f}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


COLORED = {
    "total_return",
    "benchmark_return",
    "cagr",
    "expectancy",
    "best_trade",
    "worst_trade",
    "max_drawdown",
    "sharpe",
    "sortino",
    "calmar",
}
"""Figures whose sign is gain or loss (red up, blue down); a win rate or an exposure is not."""


def _direction(name: str, value: Any) -> str:
    if value is None or name not in COLORED:
        return "flat"
    return "up" if float(value) > 0 else "down" if float(value) < 0 else "flat"


def _day(iso: Any, intraday: bool = False) -> str:
    if not iso:
        return ""
    try:
        ts = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    return ts.astimezone(KST).strftime("%m-%d %H:%M" if intraday else "%Y-%m-%d")


def _won(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.0f}"


class BacktestState(rx.State):
    config_id: str = ""
    config_label: str = ""
    strategy_title: str = ""
    params_text: str = ""
    timeframe: str = ""
    not_found: bool = False
    tab: str = "backtest"
    form: dict[str, str] = {}
    field_errors: dict[str, str] = {}
    error: str = ""
    notice: str = ""
    attachments: list[dict[str, str]] = []
    runs: list[dict[str, str]] = []
    # the run being watched
    watching: str = ""
    watch_kind: str = ""
    progress: int = 0
    status_text: str = ""
    # a backtest's result
    result_run: str = ""
    metrics: list[dict[str, str]] = []
    equity_fig: go.Figure = go.Figure()
    price_fig: go.Figure = go.Figure()
    price_symbol: str = ""
    result_symbols: list[str] = []
    trades: list[dict[str, str]] = []
    trades_note: str = ""
    # an optimisation's
    opt_run: str = ""
    opt_rows: list[dict[str, str]] = []
    opt_note: str = ""
    # a walk-forward's
    wf_run: str = ""
    wf_rows: list[dict[str, str]] = []
    wf_metrics: list[dict[str, str]] = []
    # a parity report's
    parity_run: str = ""
    parity_rows: list[dict[str, str]] = []
    parity_summary: list[dict[str, str]] = []
    _generation: int = 0

    async def _caller(self) -> tuple[SessionState, int | None]:
        session = await self.get_state(SessionState)
        user = await session._user()
        return session, None if user is None else user.id

    # ---- loading ----

    def _clear_results(self) -> None:
        self.result_run = self.opt_run = self.wf_run = self.parity_run = ""
        self.metrics, self.trades, self.result_symbols = [], [], []
        self.opt_rows, self.wf_rows, self.wf_metrics = [], [], []
        self.parity_rows, self.parity_summary = [], []
        self.equity_fig, self.price_fig = go.Figure(), go.Figure()
        self.price_symbol = self.trades_note = self.opt_note = ""
        self.watching = self.watch_kind = self.status_text = ""
        self.progress = 0

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        self._generation += 1
        self._clear_results()
        self.field_errors, self.error, self.notice = {}, "", ""
        raw = str(self.router.url.query_parameters.get("config", "")).strip()[:20]
        try:
            if not raw.isdigit():
                raise ValueError(raw)
            async with db.session() as s:
                config = await strategies_service.get_config(s, user_id, raw, ip=session._ip())
        except (NotFound, ValueError):  # get_config audits a refused id
            self.not_found = True
            self.config_id = ""
            self.error = session._t("error.not_found")
            return None
        self.not_found = False
        self.config_id = str(config.id)
        self.config_label = config.label
        info = _catalogue().get(config.strategy)
        self.strategy_title = _title(info, session.ui_lang) if info else config.strategy
        self.params_text = _params_text(info, config.params)
        self.timeframe = config.timeframe
        self.attachments = [
            {
                "id": str(a.id),
                "label": f"{a.symbol} · {session._t(f'strategy_exec.mode.{a.mode}')}",
            }
            for a in config.attachments
        ]
        self.form = self._defaults(config)
        tab = str(self.router.url.query_parameters.get("tab", ""))
        self.tab = tab if tab in TABS else "backtest"
        return await self._after_load(session, user_id)

    def _defaults(self, config: Any) -> dict[str, str]:
        costs = backtests.default_costs()
        today = datetime.now(KST).date()
        symbols = [a.symbol for a in config.attachments] or ["005930"]
        return {
            "symbols": ", ".join(symbols[: backtests.MAX_SYMBOLS]),
            "start": (today - timedelta(days=365)).isoformat(),
            "end": today.isoformat(),
            "cash": str(costs.cash),
            "commission_pct": f"{costs.commission_pct:g}",
            "tax_pct": f"{costs.tax_pct:g}",
            "slippage_ticks": str(costs.slippage_ticks),
            "method": "grid",
            "metric": "sharpe",
            "max_runs": "30",
            "folds": "3",
            "days": "30",
            "attachment": str(config.attachments[0].id) if config.attachments else "",
        }

    async def _after_load(self, session: SessionState, user_id: int) -> rx.event.EventSpec | None:
        """Show the newest finished run of each kind; resume watching one still going."""
        async with db.session() as s:
            runs = await backtests.list_runs(s, user_id, config_id=int(self.config_id), limit=30)
        self._set_runs(session, runs)
        shown: set[str] = set()
        for run in runs:
            if run.status == backtests.DONE and run.kind not in shown:
                shown.add(run.kind)
                await self._render(session, run)
        active = next((r for r in runs if r.active), None)
        if active is not None:
            return self._watch(session, active)
        return None

    def _set_runs(self, session: SessionState, runs: list[backtests.RunView]) -> None:
        self.runs = [
            {
                "id": str(r.id),
                "kind": r.kind,
                "kind_text": session._t(f"bt.kind.{r.kind}"),
                "status": r.status,
                "status_text": session._t(f"bt.status.{r.status}"),
                "progress": f"{r.progress * 100:.0f}%",
                "when": r.created_at.astimezone(KST).strftime("%m-%d %H:%M"),
                "range": f"{r.start} ~ {r.end}" if r.start and r.end else "",
                "symbols": ", ".join(r.symbols),
                "error": self._error_of(session, r),
                "active": "1" if r.active else "",
            }
            for r in runs
        ]

    @staticmethod
    def _error_of(session: SessionState, run: backtests.RunView) -> str:
        if not run.error:
            return ""
        key = f"error.{run.error}"
        return session._t(key) if key in catalog("en") else session._t("error.backtest_failed")

    # ---- the form ----

    @rx.event
    def set_tab(self, tab: str) -> None:
        if tab in TABS:
            self.tab = tab

    @rx.event
    def set_field(self, key: str, value: str) -> None:
        """The caller's own form; nothing is read or written until a run is started."""
        if key not in FORM_KEYS:
            return
        self.form = {**self.form, key: str(value if value is not None else "")[:200]}
        self.field_errors = {k: v for k, v in self.field_errors.items() if k != key}

    async def _start(self, kind: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        if not self.config_id:
            self.error = session._t("error.not_found")
            return None
        self.error = self.notice = ""
        form = dict(self.form)
        try:
            async with db.session() as s:
                if kind == "parity":
                    raw = form.get("attachment", "")
                    if not raw.isdigit():
                        raise ValidationFailed.single("attachment", "backtest_attachment_required")
                    run_id = await backtests.start_parity(
                        s,
                        user_id,
                        int(raw),
                        days=form.get("days", ""),
                        now=datetime.now(KST),
                        ip=session._ip(),
                    )
                else:
                    start = {
                        "backtest": backtests.start_backtest,
                        "optimize": backtests.start_optimization,
                        "walk_forward": backtests.start_walk_forward,
                    }[kind]
                    run_id = await start(s, user_id, int(self.config_id), form, ip=session._ip())
                run = await backtests.get_run(s, user_id, run_id)
        except ValidationFailed as exc:
            self.field_errors = {
                k: _error_text(session, code, params)
                if f"error.{code}" in catalog("en")
                else param_message(session, code, params)
                for k, (code, params) in exc.field_errors.items()
            }
            return None
        except (ServiceError, ValueError):
            self.error = session._t("error.not_found")
            return None
        self.field_errors = {}
        jobs = current_jobs()
        if jobs is not None:
            jobs.notify()
        async with db.session() as s:
            runs = await backtests.list_runs(s, user_id, config_id=int(self.config_id), limit=30)
        self._set_runs(session, runs)
        return self._watch(session, run)

    @rx.event
    async def run_backtest(self) -> rx.event.EventSpec | None:
        return await self._start("backtest")

    @rx.event
    async def run_optimization(self) -> rx.event.EventSpec | None:
        return await self._start("optimize")

    @rx.event
    async def run_walk_forward(self) -> rx.event.EventSpec | None:
        return await self._start("walk_forward")

    @rx.event
    async def run_parity(self) -> rx.event.EventSpec | None:
        return await self._start("parity")

    # ---- watching a run ----

    def _watch(self, session: SessionState, run: backtests.RunView) -> rx.event.EventSpec:
        self._generation += 1
        self.watching = str(run.id)
        self.watch_kind = run.kind
        self.progress = int(run.progress * 100)
        self.status_text = session._t(f"bt.status.{run.status}")
        return BacktestState.watch(self._generation)

    @rx.event(background=True)
    async def watch(self, generation: int) -> None:
        """Poll the watched row until it finishes, the page moves on, or time runs out."""
        started = time.monotonic()
        try:
            while time.monotonic() - started < MAX_WATCH_SECONDS:
                await asyncio.sleep(POLL_SECONDS)
                async with self:
                    if self._generation != generation or not await self._poll():
                        return
        except Exception:
            log.exception("watching backtest run %s stopped", self.watching)

    async def _poll(self) -> bool:
        """One look at the watched row; ``False`` once there is nothing more to wait for."""
        if not self.watching:
            return False
        session, user_id = await self._caller()
        if user_id is None:
            return False
        try:
            async with db.session() as s:
                run = await backtests.get_run(s, user_id, int(self.watching), ip=session._ip())
        except (NotFound, ValueError):
            self.watching = ""
            return False
        self.progress = int(run.progress * 100)
        self.status_text = session._t(f"bt.status.{run.status}")
        if run.active:
            return True
        if run.status == backtests.DONE:
            await self._render(session, run)
            self.tab = run.kind
        elif run.status == backtests.FAILED:
            self.error = self._error_of(session, run)
        async with db.session() as s:
            runs = await backtests.list_runs(s, user_id, config_id=run.config_id, limit=30)
        self._set_runs(session, runs)
        self.watching = ""
        return False

    @rx.event
    async def cancel(self, run_id: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                run = await backtests.cancel_run(s, user_id, int(run_id), ip=session._ip())
        except (NotFound, ValueError):
            self.error = session._t("error.not_found")
            return None
        jobs = current_jobs()
        if jobs is not None:
            jobs.cancel(run.id)
        self.notice = session._t("bt.cancelled")
        if self.watching == str(run.id):
            self.watching = ""
            self.status_text = session._t(f"bt.status.{run.status}")
        async with db.session() as s:
            runs = await backtests.list_runs(s, user_id, config_id=run.config_id, limit=30)
        self._set_runs(session, runs)
        return None

    @rx.event
    async def show_run(self, run_id: str) -> rx.event.EventSpec | None:
        """Show one of the caller's finished runs from the list."""
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                run = await backtests.get_run(s, user_id, int(run_id), ip=session._ip())
        except (NotFound, ValueError):
            self.error = session._t("error.not_found")
            return None
        if run.status != backtests.DONE:
            return None
        await self._render(session, run)
        self.tab = run.kind
        return None

    @rx.event
    async def choose_symbol(self, symbol: str) -> rx.event.EventSpec | None:
        """Another symbol of the shown backtest on the price chart."""
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        if not self.result_run or symbol not in self.result_symbols:
            return None
        try:
            async with db.session() as s:
                run = await backtests.get_run(s, user_id, int(self.result_run), ip=session._ip())
        except (NotFound, ValueError):
            self.error = session._t("error.not_found")
            return None
        await self._price_chart(session, run, symbol)
        return None

    # ---- rendering a finished run ----

    async def _render(self, session: SessionState, run: backtests.RunView) -> None:
        if run.kind == "backtest":
            await self._render_backtest(session, run)
        elif run.kind == "optimize":
            self._render_optimization(session, run)
        elif run.kind == "walk_forward":
            self._render_walk_forward(session, run)
        elif run.kind == "parity":
            self._render_parity(session, run)

    def _cards(self, session: SessionState, metrics: dict[str, Any]) -> list[dict[str, str]]:
        return [
            {
                "key": name,
                "label": session._t(f"bt.metric.{name}"),
                "value": metric_text(name, metrics.get(name)),
                "dir": _direction(name, metrics.get(name)),
            }
            for name in CARDS
            if name in metrics
        ]

    async def _render_backtest(self, session: SessionState, run: backtests.RunView) -> None:
        out = run.output
        self.result_run = str(run.id)
        self.metrics = self._cards(session, out.get("metrics") or {})
        self.equity_fig = equity_figure(
            out.get("equity") or [],
            out.get("drawdown") or [],
            equity_name=session._t("bt.equity"),
            drawdown_name=session._t("bt.drawdown"),
        )
        intraday = run.request.get("timeframe", "1d") not in ("1d", "1w")
        trades = out.get("trades") or []
        self.trades = [
            {
                "symbol": t.get("symbol", ""),
                "entry": _day(t.get("entry_time"), intraday),
                "entry_price": _won(t.get("entry_price")),
                "exit": _day(t.get("exit_time"), intraday) or session._t("bt.open_trade"),
                "exit_price": _won(t.get("exit_price")),
                "qty": f"{int(t.get('qty') or 0):,}",
                "pnl": f"{float(t.get('pnl') or 0):+,.0f}",
                "ret": metric_text("best_trade", t.get("return_pct")),
                "dir": _direction("best_trade", t.get("pnl")),
                "bars": str(t.get("bars_held", "")),
            }
            for t in trades
        ]
        total = int(out.get("trades_total") or len(trades))
        self.trades_note = (
            session._t("bt.trades_capped", shown=len(trades), total=total)
            if total > len(trades)
            else ""
        )
        self.result_symbols = list(run.symbols)
        await self._price_chart(session, run, run.symbols[0] if run.symbols else "")

    async def _price_chart(
        self, session: SessionState, run: backtests.RunView, symbol: str
    ) -> None:
        self.price_symbol = symbol
        if not symbol or run.start is None or run.end is None:
            self.price_fig = go.Figure()
            return
        tf = Timeframe(run.request.get("timeframe", "1d"))
        async with db.session() as s:
            candles = await candle_store.between(
                s,
                symbol,
                tf,
                backtests.day_start(run.start),
                backtests.day_start(run.end + timedelta(days=1)),
            )
        candles = candles[-MAX_PRICE_BARS:]
        trades = [t for t in run.output.get("trades") or [] if t.get("symbol") == symbol]
        self.price_fig = trades_figure(
            candles, trades, buy_name=session._t("bt.buy"), sell_name=session._t("bt.sell")
        )

    def _render_optimization(self, session: SessionState, run: backtests.RunView) -> None:
        out = run.output
        self.opt_run = str(run.id)
        metric = str(out.get("metric", "sharpe"))
        rows = out.get("rows") or []
        self.opt_rows = [
            {
                "rank": str(i + 1),
                "index": str(i),
                "params": _params_text(None, r.get("params") or {}),
                "score": metric_text(metric, r.get("score")),
                **{k: metric_text(k, (r.get("metrics") or {}).get(k)) for k in OPT_COLUMNS},
                "href": f"/strategies?use_run={run.id}&row={i}",
            }
            for i, r in enumerate(rows)
        ]
        self.opt_note = session._t(
            "bt.opt_note",
            runs=len(rows),
            metric=session._t(f"bt.metric.{metric}"),
            skipped=int(out.get("skipped") or 0),
        )

    def _render_walk_forward(self, session: SessionState, run: backtests.RunView) -> None:
        wf = run.output.get("walk_forward") or {}
        metric = str(run.output.get("metric", "sharpe"))
        self.wf_run = str(run.id)
        intraday = run.request.get("timeframe", "1d") not in ("1d", "1w")
        self.wf_rows = [
            {
                "fold": str(int(f.get("index", i)) + 1),
                "train": f"{_day(f.get('train_start'), intraday)} ~ "
                f"{_day(f.get('train_end'), intraday)}",
                "test": f"{_day(f.get('test_start'), intraday)} ~ "
                f"{_day(f.get('test_end'), intraday) or session._t('bt.to_end')}",
                "params": _params_text(None, f.get("params") or {}) or "-",
                "in_sample": metric_text(metric, (f.get("in_sample") or {}).get(metric)),
                "out_of_sample": metric_text(metric, (f.get("out_of_sample") or {}).get(metric)),
                "oos_return": metric_text(
                    "total_return", (f.get("out_of_sample") or {}).get("total_return")
                ),
            }
            for i, f in enumerate(wf.get("folds") or [])
        ]
        self.wf_metrics = self._cards(session, wf.get("metrics") or {})

    def _render_parity(self, session: SessionState, run: backtests.RunView) -> None:
        report = run.output.get("parity") or {}
        self.parity_run = str(run.id)
        intraday = run.request.get("timeframe", "1d") not in ("1d", "1w")
        rows = report.get("rows") or []
        self.parity_rows = [
            {
                "time": _day(r.get("time"), intraday),
                "symbol": r.get("symbol", ""),
                "action": session._t(f"bt.{r.get('action')}")
                if r.get("action") in ("buy", "sell")
                else str(r.get("action", "")),
                "status": r.get("status", ""),
                "status_text": session._t(f"bt.parity.{r.get('status')}"),
                "bt_price": _won(r.get("bt_price")),
                "actual_price": _won(r.get("actual_price")),
                "slip_won": "-" if r.get("slip_won") is None else f"{r['slip_won']:+,.0f}",
                "slip_pct": "-" if r.get("slip_pct") is None else f"{r['slip_pct']:+.2f}%",
                "reason": self._reason(session, str(r.get("reason") or "")),
            }
            for r in rows
        ]
        summary = report.get("summary") or {}
        figures = [
            ("matched", str(summary.get("matched", 0)), "flat"),
            ("missed", str(summary.get("missed", 0)), "flat"),
            ("extra", str(summary.get("extra", 0)), "flat"),
            ("refused", str(summary.get("refused", 0)), "flat"),
            (
                "backtest_return",
                metric_text("total_return", summary.get("backtest_return")),
                _direction("total_return", summary.get("backtest_return")),
            ),
            (
                "actual_return",
                metric_text("total_return", summary.get("actual_return")),
                _direction("total_return", summary.get("actual_return")),
            ),
            (
                "avg_slip",
                "-" if summary.get("avg_slip_pct") is None else f"{summary['avg_slip_pct']:+.2f}%",
                "flat",
            ),
        ]
        self.parity_summary = [
            {"key": k, "label": session._t(f"bt.parity.sum.{k}"), "value": v, "dir": d}
            for k, v, d in figures
        ]

    @staticmethod
    def _reason(session: SessionState, reason: str) -> str:
        if not reason:
            return ""
        texts = catalog(session.ui_lang)
        key = f"strategy_exec.order_reason.{reason}"
        if key in texts and "{" not in texts[key]:
            return texts[key]
        return reason
