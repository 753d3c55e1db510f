"""The backtest page (/backtest?config=ID): backtest, optimisation, walk-forward, parity.

One form above four tabs; a running job shows a progress bar (polled from its row)
with a cancel button; finished runs show metric cards, the equity and drawdown
chart, trades on the price chart and a trade table, or the tab's own table. Cards
and inputs wrap, charts take the width, and tables scroll inside their own box.
"""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import SELECT_STYLE, error_text, notice_text, page_frame, price_color
from app.pages.strategy_tables import cell, scroll_table
from app.services.backtests import METHODS, METRICS
from app.states.backtest import BacktestState

GRAY = "var(--gray-10)"
PLOT_CONFIG = {"displayModeBar": False, "responsive": True}


def _slug(key: str, prefix: str = "bt-") -> str:
    """``max_runs`` -> ``bt-max-runs``: the input's id (and its message's, with a prefix)."""
    return prefix + key.replace("_", "-")


def _error(key: str) -> rx.Component:
    return rx.text(
        BacktestState.field_errors.get(key, "").to(str),
        id=_slug(key, "bt-error-"),
        color="var(--red-11)",
        size="2",
        aria_live="polite",
    )


def _field(key: str, label_key: str, control: rx.Component, basis: str = "150px") -> rx.Component:
    return rx.flex(
        rx.text(t(label_key), as_="label", size="2", weight="medium", html_for=_slug(key)),
        control,
        _error(key),
        direction="column",
        spacing="1",
        flex="1",
        min_width=f"min(100%, {basis})",
    )


def _input(key: str, *, type_: str = "text", mode: str | None = None) -> rx.Component:
    props: dict[str, object] = {"input_mode": mode} if mode else {}
    return rx.input(
        id=_slug(key),
        value=BacktestState.form.get(key, "").to(str),
        on_change=lambda v: BacktestState.set_field(key, v),
        type=type_,
        size="2",
        width="100%",
        auto_complete="off",
        **props,
    )


def _select(key: str, options: list[tuple[str, str]]) -> rx.Component:
    return rx.el.select(
        *[rx.el.option(t(label), value=value) for value, label in options],
        id=_slug(key),
        value=BacktestState.form.get(key, "").to(str),
        on_change=lambda v: BacktestState.set_field(key, v),
        style=SELECT_STYLE,
    )


def _row(*children: rx.Component) -> rx.Component:
    return rx.flex(*children, gap="10px", wrap="wrap", width="100%")


def _range_and_costs() -> rx.Component:
    return rx.flex(
        _row(
            _field(
                "symbols",
                "bt.f.symbols",
                _input("symbols"),
                basis="240px",
            ),
            _field("start", "bt.f.start", _input("start", type_="date")),
            _field("end", "bt.f.end", _input("end", type_="date")),
        ),
        _row(
            _field("cash", "bt.f.cash", _input("cash", mode="numeric")),
            _field("commission_pct", "bt.f.commission", _input("commission_pct", mode="decimal")),
            _field("tax_pct", "bt.f.tax", _input("tax_pct", mode="decimal")),
            _field("slippage_ticks", "bt.f.slippage", _input("slippage_ticks", mode="numeric")),
        ),
        rx.text(t("bt.costs_help"), size="1", color=GRAY),
        direction="column",
        gap="8px",
        width="100%",
    )


def _search_fields(with_folds: bool) -> rx.Component:
    return _row(
        _field(
            "method", "bt.f.method", _select("method", [(m, f"bt.method.{m}") for m in METHODS])
        ),
        _field(
            "metric", "bt.f.metric", _select("metric", [(m, f"bt.metric.{m}") for m in METRICS])
        ),
        _field("max_runs", "bt.f.max_runs", _input("max_runs", mode="numeric")),
        *([_field("folds", "bt.f.folds", _input("folds", mode="numeric"))] if with_folds else []),
    )


def _run_button(label_key: str, event: rx.event.EventHandler, id_: str) -> rx.Component:
    return rx.button(
        t(label_key),
        on_click=event,
        size="3",
        id=id_,
        disabled=BacktestState.watching != "",
        width="fit-content",
    )


# ---- progress and the run list -----------------------------------------------------------


def _progress() -> rx.Component:
    return rx.cond(
        BacktestState.watching != "",
        rx.card(
            rx.flex(
                rx.text(
                    rx.match(
                        BacktestState.watch_kind,
                        *[(k, t(f"bt.kind.{k}")) for k in ("backtest", "optimize", "walk_forward")],
                        t("bt.kind.parity"),
                    ),
                    " · ",
                    BacktestState.status_text,
                    " · ",
                    BacktestState.progress,
                    "%",
                    size="2",
                    id="bt-progress-text",
                ),
                rx.progress(value=BacktestState.progress, max=100, width="100%", id="bt-progress"),
                rx.button(
                    t("bt.cancel"),
                    on_click=BacktestState.cancel(BacktestState.watching),
                    size="1",
                    variant="soft",
                    color_scheme="red",
                    id="bt-cancel",
                    width="fit-content",
                ),
                direction="column",
                gap="6px",
            ),
            width="100%",
            id="bt-watch",
        ),
    )


def _run_row(r: rx.Var) -> rx.Component:
    rid = r["id"].to(str)
    return rx.el.tr(
        cell(r["when"]),
        cell(r["kind_text"]),
        cell(
            rx.flex(
                rx.text(r["status_text"]),
                rx.cond(r["active"] != "", rx.text(r["progress"], color=GRAY)),
                rx.cond(r["error"] != "", rx.text(r["error"], color="var(--red-11)")),
                gap="4px",
                wrap="wrap",
            )
        ),
        cell(r["range"]),
        cell(r["symbols"]),
        cell(
            rx.cond(
                r["active"] != "",
                rx.button(
                    t("bt.cancel"),
                    on_click=BacktestState.cancel(rid),
                    size="1",
                    variant="ghost",
                    color_scheme="red",
                ),
                rx.cond(
                    r["status"] == "done",
                    rx.button(
                        t("bt.show"),
                        on_click=BacktestState.show_run(rid),
                        size="1",
                        variant="ghost",
                        id="bt-show-" + rid,
                    ),
                ),
            )
        ),
        class_name="bt-run",
        data_id=rid,
    )


def _runs() -> rx.Component:
    return rx.cond(
        BacktestState.runs.length() > 0,
        rx.box(
            rx.heading(t("bt.runs"), size="3", margin_bottom="6px"),
            scroll_table(
                "bt-runs",
                [
                    ("bt.col.when", False),
                    ("bt.col.kind", False),
                    ("bt.col.status", False),
                    ("bt.col.range", False),
                    ("bt.col.symbols", False),
                    ("bt.col.action", False),
                ],
                BacktestState.runs,
                _run_row,
            ),
            margin_top="16px",
        ),
    )


# ---- results ---------------------------------------------------------------------------


def _card(m: rx.Var) -> rx.Component:
    return rx.box(
        rx.text(m["label"], size="1", color=GRAY),
        rx.text(
            m["value"],
            size="4",
            weight="bold",
            color=price_color(m["dir"]),
            font_variant_numeric="tabular-nums",
        ),
        padding="8px 10px",
        border="1px solid var(--gray-a5)",
        border_radius="8px",
        min_width="0",
        class_name="bt-metric",
        data_key=m["key"],
    )


def _cards(items: rx.Var, id_: str) -> rx.Component:
    return rx.grid(
        rx.foreach(items, _card),
        columns=rx.breakpoints(initial="2", sm="3", md="4"),
        gap="8px",
        width="100%",
        id=id_,
    )


def _chart(figure: rx.Var, id_: str, height: str) -> rx.Component:
    return rx.box(
        rx.plotly(
            data=figure,
            config=PLOT_CONFIG,
            use_resize_handler=True,
            width="100%",
            height=height,
            id=id_,
        ),
        width="100%",
        overflow="hidden",
    )


def _trade_row(tr: rx.Var) -> rx.Component:
    return rx.el.tr(
        cell(tr["symbol"]),
        cell(tr["entry"]),
        cell(tr["entry_price"], num=True),
        cell(tr["exit"]),
        cell(tr["exit_price"], num=True),
        cell(tr["qty"], num=True),
        cell(tr["pnl"], num=True, color=price_color(tr["dir"])),
        cell(tr["ret"], num=True, color=price_color(tr["dir"])),
        cell(tr["bars"], num=True),
        class_name="bt-trade",
    )


def _backtest_result() -> rx.Component:
    return rx.cond(
        BacktestState.result_run != "",
        rx.flex(
            _cards(BacktestState.metrics, "bt-metrics"),
            rx.heading(t("bt.equity_title"), size="3"),
            _chart(BacktestState.equity_fig, "bt-equity-chart", "380px"),
            rx.flex(
                rx.heading(t("bt.price_title"), size="3"),
                rx.spacer(),
                rx.cond(
                    BacktestState.result_symbols.length() > 1,
                    rx.el.select(
                        rx.foreach(
                            BacktestState.result_symbols, lambda s: rx.el.option(s, value=s)
                        ),
                        value=BacktestState.price_symbol,
                        on_change=BacktestState.choose_symbol,
                        id="bt-price-symbol",
                        aria_label=t("bt.price_title"),
                        style={**SELECT_STYLE, "width": "auto"},
                    ),
                    rx.text(BacktestState.price_symbol, size="2", color=GRAY),
                ),
                align="center",
                wrap="wrap",
                gap="8px",
            ),
            _chart(BacktestState.price_fig, "bt-price-chart", "360px"),
            rx.heading(t("bt.trades_title"), size="3"),
            rx.cond(
                BacktestState.trades.length() > 0,
                scroll_table(
                    "bt-trades",
                    [
                        ("bt.col.symbol", False),
                        ("bt.col.entry", False),
                        ("bt.col.entry_price", True),
                        ("bt.col.exit", False),
                        ("bt.col.exit_price", True),
                        ("bt.col.qty", True),
                        ("bt.col.pnl", True),
                        ("bt.col.return", True),
                        ("bt.col.bars", True),
                    ],
                    BacktestState.trades,
                    _trade_row,
                ),
                rx.text(t("bt.no_trades"), size="2", color=GRAY, id="bt-no-trades"),
            ),
            rx.cond(
                BacktestState.trades_note != "",
                rx.text(BacktestState.trades_note, size="1", color=GRAY),
            ),
            direction="column",
            gap="10px",
            width="100%",
            margin_top="12px",
            id="bt-result",
        ),
    )


def _opt_row(r: rx.Var) -> rx.Component:
    return rx.el.tr(
        cell(r["rank"], num=True),
        cell(r["params"]),
        cell(r["score"], num=True),
        cell(r["total_return"], num=True),
        cell(r["sharpe"], num=True),
        cell(r["max_drawdown"], num=True),
        cell(r["win_rate"], num=True),
        cell(r["trades"], num=True),
        cell(
            rx.link(
                t("bt.use_params"),
                href=r["href"].to(str),
                size="2",
                class_name="bt-use-params",
            )
        ),
        class_name="bt-opt-row",
    )


def _optimization_result() -> rx.Component:
    return rx.cond(
        BacktestState.opt_run != "",
        rx.flex(
            rx.text(BacktestState.opt_note, size="2", color=GRAY, id="bt-opt-note"),
            scroll_table(
                "bt-opt-table",
                [
                    ("bt.col.rank", True),
                    ("bt.col.params", False),
                    ("bt.col.score", True),
                    ("bt.metric.total_return", True),
                    ("bt.metric.sharpe", True),
                    ("bt.metric.max_drawdown", True),
                    ("bt.metric.win_rate", True),
                    ("bt.metric.trades", True),
                    ("bt.col.action", False),
                ],
                BacktestState.opt_rows,
                _opt_row,
            ),
            direction="column",
            gap="8px",
            margin_top="12px",
            width="100%",
        ),
    )


def _wf_row(r: rx.Var) -> rx.Component:
    return rx.el.tr(
        cell(r["fold"], num=True),
        cell(r["train"]),
        cell(r["test"]),
        cell(r["params"]),
        cell(r["in_sample"], num=True),
        cell(r["out_of_sample"], num=True),
        cell(r["oos_return"], num=True),
        class_name="bt-wf-row",
    )


def _walk_forward_result() -> rx.Component:
    return rx.cond(
        BacktestState.wf_run != "",
        rx.flex(
            rx.text(t("bt.wf_stitched"), size="2", weight="medium"),
            _cards(BacktestState.wf_metrics, "bt-wf-metrics"),
            scroll_table(
                "bt-wf-table",
                [
                    ("bt.col.fold", True),
                    ("bt.col.train", False),
                    ("bt.col.test", False),
                    ("bt.col.params", False),
                    ("bt.col.in_sample", True),
                    ("bt.col.out_of_sample", True),
                    ("bt.col.oos_return", True),
                ],
                BacktestState.wf_rows,
                _wf_row,
            ),
            direction="column",
            gap="8px",
            margin_top="12px",
            width="100%",
        ),
    )


def _parity_row(r: rx.Var) -> rx.Component:
    return rx.el.tr(
        cell(r["time"]),
        cell(r["action"]),
        cell(
            rx.badge(
                r["status_text"],
                color_scheme=rx.match(
                    r["status"],
                    ("matched", "green"),
                    ("missed", "amber"),
                    ("extra", "amber"),
                    "red",
                ),
                variant="soft",
            )
        ),
        cell(r["bt_price"], num=True),
        cell(r["actual_price"], num=True),
        cell(r["slip_won"], num=True),
        cell(r["slip_pct"], num=True),
        cell(r["reason"]),
        class_name="bt-parity-row",
    )


def _parity_result() -> rx.Component:
    return rx.cond(
        BacktestState.parity_run != "",
        rx.flex(
            _cards(BacktestState.parity_summary, "bt-parity-summary"),
            rx.cond(
                BacktestState.parity_rows.length() > 0,
                scroll_table(
                    "bt-parity-table",
                    [
                        ("bt.col.bar", False),
                        ("bt.col.signal", False),
                        ("bt.col.status", False),
                        ("bt.col.bt_price", True),
                        ("bt.col.actual_price", True),
                        ("bt.col.slip_won", True),
                        ("bt.col.slip_pct", True),
                        ("bt.col.reason", False),
                    ],
                    BacktestState.parity_rows,
                    _parity_row,
                ),
                rx.text(t("bt.parity.empty"), size="2", color=GRAY),
            ),
            direction="column",
            gap="8px",
            margin_top="12px",
            width="100%",
        ),
    )


def _parity_form() -> rx.Component:
    return rx.flex(
        rx.text(t("bt.parity.intro"), size="2"),
        rx.cond(
            BacktestState.attachments.length() > 0,
            _row(
                _field(
                    "attachment",
                    "bt.f.attachment",
                    rx.el.select(
                        rx.foreach(
                            BacktestState.attachments,
                            lambda a: rx.el.option(a["label"], value=a["id"]),
                        ),
                        id="bt-attachment",
                        value=BacktestState.form.get("attachment", "").to(str),
                        on_change=lambda v: BacktestState.set_field("attachment", v),
                        style=SELECT_STYLE,
                    ),
                    basis="220px",
                ),
                _field("days", "bt.f.days", _input("days", mode="numeric")),
            ),
            rx.text(t("bt.parity.no_attachments"), size="2", color=GRAY),
        ),
        _run_button("bt.run_parity", BacktestState.run_parity, "bt-run-parity"),
        rx.callout.root(
            rx.callout.text(t("bt.parity.gaps_title"), weight="bold"),
            rx.callout.text(t("bt.parity.gaps"), size="2"),
            color_scheme="gray",
            variant="surface",
            size="1",
        ),
        direction="column",
        gap="10px",
        width="100%",
    )


def _tabs() -> rx.Component:
    return rx.tabs.root(
        rx.tabs.list(
            *[
                rx.tabs.trigger(t(f"bt.kind.{k}"), value=k, id=f"bt-tab-{k.replace('_', '-')}")
                for k in ("backtest", "optimize", "walk_forward", "parity")
            ],
            size="2",
            wrap="wrap",
        ),
        rx.tabs.content(
            rx.flex(
                _range_and_costs(),
                _run_button("bt.run", BacktestState.run_backtest, "bt-run"),
                direction="column",
                gap="10px",
            ),
            _backtest_result(),
            value="backtest",
            padding_top="12px",
        ),
        rx.tabs.content(
            rx.flex(
                rx.text(t("bt.opt_intro"), size="2"),
                _range_and_costs(),
                _search_fields(with_folds=False),
                _run_button("bt.run_opt", BacktestState.run_optimization, "bt-run-opt"),
                direction="column",
                gap="10px",
            ),
            _optimization_result(),
            value="optimize",
            padding_top="12px",
        ),
        rx.tabs.content(
            rx.flex(
                rx.text(t("bt.wf_intro"), size="2"),
                _range_and_costs(),
                _search_fields(with_folds=True),
                _run_button("bt.run_wf", BacktestState.run_walk_forward, "bt-run-wf"),
                direction="column",
                gap="10px",
            ),
            _walk_forward_result(),
            value="walk_forward",
            padding_top="12px",
        ),
        rx.tabs.content(
            _parity_form(),
            _parity_result(),
            value="parity",
            padding_top="12px",
        ),
        value=BacktestState.tab,
        on_change=BacktestState.set_tab,
        width="100%",
    )


def backtest_page() -> rx.Component:
    return page_frame(
        rx.flex(
            rx.link(t("bt.back"), href="/strategies", size="2", id="bt-back"),
            rx.spacer(),
            rx.cond(
                BacktestState.config_id != "",
                rx.link(
                    t("sp.edit"),
                    href="/strategies?edit=" + BacktestState.config_id,
                    size="2",
                ),
            ),
            align="center",
            gap="8px",
        ),
        rx.cond(
            BacktestState.not_found,
            rx.text(t("bt.not_found"), size="3", id="bt-not-found", margin_top="12px"),
            rx.flex(
                rx.heading(t("bt.title"), " · ", BacktestState.config_label, size="6"),
                rx.text(
                    BacktestState.strategy_title,
                    " · ",
                    BacktestState.timeframe,
                    " · ",
                    BacktestState.params_text,
                    size="2",
                    color=GRAY,
                    word_break="break-word",
                ),
                error_text(BacktestState.error, "bt-error"),
                notice_text(BacktestState.notice, "bt-notice"),
                error_text(BacktestState.field_errors.get("form", "").to(str), "bt-error-form"),
                _progress(),
                _tabs(),
                _runs(),
                direction="column",
                gap="8px",
                margin_top="8px",
                width="100%",
                min_width="0",
            ),
        ),
        rx.box(height="120px"),
    )
