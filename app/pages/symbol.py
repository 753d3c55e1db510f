"""The symbol page: a live candlestick chart with volume, overlays and alert levels."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import page_frame, price_color
from app.states.chart import ChartState
from app.states.live import SymbolLiveState
from app.states.session import SessionState

_TF_KEYS = ("1m", "5m", "15m", "60m", "1d")
_OVERLAYS = ("ma20", "ma60", "bb")


def _tf_button(tf: str) -> rx.Component:
    return rx.button(
        t(f"chart.tf.{tf}"),
        on_click=ChartState.set_timeframe(tf),
        variant=rx.cond(ChartState.timeframe == tf, "solid", "soft"),
        size="1",
        id=f"tf-{tf}",
        aria_pressed=rx.cond(ChartState.timeframe == tf, "true", "false"),
    )


def _overlay_button(kind: str) -> rx.Component:
    on = ChartState.overlays.contains(kind)
    return rx.button(
        t(f"chart.overlay.{kind}"),
        on_click=ChartState.toggle_overlay(kind),
        variant=rx.cond(on, "solid", "outline"),
        color_scheme="gray",
        size="1",
        id=f"overlay-{kind}",
        aria_pressed=rx.cond(on, "true", "false"),
    )


def _live(key: str, fallback: rx.Var) -> rx.Var:
    """The shared per-symbol price (pushed sub-second) once there is one, else what
    the chart drew last (stored candles, or the runner at the last redraw)."""
    return rx.cond(SymbolLiveState.quote.contains(key), SymbolLiveState.quote[key], fallback)


def _header() -> rx.Component:
    name = rx.cond(SessionState.ui_lang == "en", ChartState.name_en, ChartState.name_ko)
    return rx.flex(
        rx.flex(
            rx.heading(name, size="6", id="chart-name"),
            rx.text(ChartState.code, " · ", ChartState.market, color="var(--gray-10)", size="2"),
            direction="column",
            min_width="0",
        ),
        rx.flex(
            rx.text(
                _live("price", ChartState.price),
                size="6",
                weight="bold",
                id="chart-price",
                color=price_color(_live("dir", ChartState.direction)),
                font_variant_numeric="tabular-nums",
            ),
            rx.text(
                _live("diff", ChartState.change),
                " (",
                _live("change", ChartState.change_pct),
                ")",
                size="2",
                id="chart-change",
                color=price_color(_live("dir", ChartState.direction)),
                font_variant_numeric="tabular-nums",
            ),
            direction="column",
            align="end",
        ),
        justify="between",
        align="center",
        gap="12px",
        wrap="wrap",
    )


def _chart() -> rx.Component:
    return rx.cond(
        ChartState.bars > 0,
        rx.box(
            rx.plotly.finance(
                data=ChartState.figure,
                config={"displayModeBar": False, "responsive": True, "scrollZoom": True},
                use_resize_handler=True,
                width="100%",
                height="420px",
                id="symbol-chart",
            ),
            width="100%",
            overflow="hidden",
            data_bars=ChartState.bars.to(str),
        ),
        rx.text(t("chart.no_data"), color="var(--gray-10)", padding="24px 0", id="chart-empty"),
    )


def symbol_page() -> rx.Component:
    return page_frame(
        rx.cond(
            ChartState.not_found,
            rx.flex(
                rx.text(
                    SessionState.tr["chart.not_found"].to(str).replace("{code}", ChartState.code),
                    color="var(--red-11)",
                    id="chart-not-found",
                    role="alert",
                ),
                rx.link(t("chart.back"), href="/"),
                direction="column",
                spacing="3",
            ),
            rx.flex(
                _header(),
                rx.flex(
                    rx.flex(*(_tf_button(tf) for tf in _TF_KEYS), gap="4px", wrap="wrap"),
                    rx.flex(*(_overlay_button(k) for k in _OVERLAYS), gap="4px", wrap="wrap"),
                    justify="between",
                    gap="8px",
                    wrap="wrap",
                ),
                _chart(),
                rx.flex(
                    rx.text(
                        t("chart.levels"),
                        ": ",
                        rx.text.strong(ChartState.levels, id="chart-levels"),
                        size="1",
                        color="var(--gray-10)",
                    ),
                    rx.link(
                        rx.button(rx.icon("bell-plus", size=14), t("chart.set_alert"), size="2"),
                        href="/rules/new?symbol=" + ChartState.code,
                        id="chart-new-alert",
                    ),
                    justify="between",
                    align="center",
                    gap="8px",
                    wrap="wrap",
                ),
                direction="column",
                spacing="3",
                width="100%",
            ),
        ),
        rx.box(on_unmount=ChartState.leave),
    )
