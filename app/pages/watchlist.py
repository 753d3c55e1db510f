"""Watchlist with live prices. Rows come from the user's shared LiveState."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import error_text, notice_text, page_frame, price_color
from app.states.live import LiveState
from app.states.pages import WatchlistState
from app.states.session import SessionState


def _name(row: rx.Var) -> rx.Var:
    return rx.cond(SessionState.ui_lang == "en", row["name_en"], row["name_ko"])


def _suggestion(item: rx.Var) -> rx.Component:
    return rx.button(
        rx.text(_name(item), weight="medium"),
        rx.text(item["code"], color="var(--gray-10)", size="1"),
        on_click=WatchlistState.pick(item["code"]),
        variant="ghost",
        type="button",
        justify="start",
        width="100%",
        class_name="suggestion",
    )


def _row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.link(
            rx.flex(
                rx.text(_name(row), weight="bold", size="3"),
                rx.text(row["code"], " · ", row["market"], color="var(--gray-10)", size="1"),
                direction="column",
                min_width="0",
            ),
            href="/symbol?code=" + row["code"].to(str),
            id="chart-" + row["code"].to(str),
            color="inherit",
            underline="none",
            min_width="0",
            flex="1",
        ),
        rx.flex(
            rx.text(
                rx.cond(row["price"] != "", row["price"], t("watchlist.no_price")),
                size="4",
                weight="bold",
                id="price-" + row["code"].to(str),
                color=price_color(row["dir"]),
                font_variant_numeric="tabular-nums",
            ),
            rx.text(
                row["diff"],
                " ",
                row["change"],
                size="2",
                id="change-" + row["code"].to(str),
                color=price_color(row["dir"]),
                font_variant_numeric="tabular-nums",
            ),
            direction="column",
            align="end",
        ),
        rx.link(
            rx.icon_button(
                rx.icon("bell-plus", size=16),
                variant="ghost",
                aria_label=t("watchlist.set_alert"),
                title=t("watchlist.set_alert"),
            ),
            href="/rules?symbol=" + row["code"].to(str),
            id="alert-" + row["code"].to(str),
        ),
        rx.icon_button(
            rx.icon("x", size=16),
            on_click=WatchlistState.remove(row["item_id"]),
            variant="ghost",
            color_scheme="gray",
            aria_label=t("watchlist.remove"),
            id="remove-" + row["code"].to(str),
        ),
        align="center",
        spacing="3",
        padding="12px",
        border_bottom="1px solid var(--gray-a4)",
        class_name="watch-row",
        data_code=row["code"],
    )


def watchlist_page() -> rx.Component:
    return page_frame(
        rx.flex(
            rx.heading(t("watchlist.title"), size="6"),
            rx.badge(t("watchlist.demo_market"), variant="soft", color_scheme="gray"),
            align="center",
            spacing="3",
            wrap="wrap",
        ),
        rx.form(
            rx.flex(
                rx.input(
                    name="symbol",
                    value=WatchlistState.query,
                    on_change=WatchlistState.set_query,
                    debounce_timeout=250,
                    placeholder=t("watchlist.add_placeholder"),
                    id="symbol-input",
                    auto_complete="off",
                    flex="1",
                    size="3",
                ),
                rx.button(t("watchlist.add"), type="submit", size="3", id="add-symbol"),
                spacing="2",
                width="100%",
            ),
            on_submit=WatchlistState.submit,
            margin_top="12px",
        ),
        error_text(WatchlistState.error, "watch-error"),
        notice_text(WatchlistState.notice, "watch-notice"),
        rx.cond(
            WatchlistState.suggestions.length() > 0,
            rx.card(
                rx.foreach(WatchlistState.suggestions, _suggestion),
                id="suggestions",
                margin_top="4px",
            ),
        ),
        rx.box(
            rx.cond(
                LiveState.watch_view.length() > 0,
                rx.foreach(LiveState.watch_view, _row),
                rx.text(t("watchlist.empty"), color="var(--gray-10)", padding="12px"),
            ),
            margin_top="12px",
            id="watchlist",
        ),
    )
