"""Alert history with each delivery's outcome: the log TradingView does not show."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import page_frame
from app.states.live import LiveState
from app.states.pages import HistoryState


def _row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.text(row["time"], size="1", color="var(--gray-10)", font_variant_numeric="tabular-nums"),
        rx.text(row["title"], weight=rx.cond(row["read"] == "", "bold", "regular")),
        rx.text(row["body"], size="2"),
        rx.cond(
            row["values"] != "",
            rx.text(row["values"], size="1", color="var(--gray-11)", class_name="history-values"),
        ),
        rx.text(row["deliveries"], size="1", color="var(--gray-11)"),
        direction="column",
        spacing="1",
        padding="12px",
        border_bottom="1px solid var(--gray-a4)",
        class_name="history-row",
    )


def history_page() -> rx.Component:
    return page_frame(
        rx.flex(
            rx.heading(t("history.title"), size="6"),
            rx.spacer(),
            rx.button(t("history.mark_read"), on_click=HistoryState.mark_all_read, variant="soft"),
            align="center",
            spacing="3",
            wrap="wrap",
        ),
        rx.cond(
            HistoryState.digest_filter,
            rx.callout(
                rx.flex(
                    rx.text(t("history.digest_only")),
                    rx.link(t("history.show_all"), href="/history"),
                    spacing="2",
                    wrap="wrap",
                ),
                size="1",
                margin_top="12px",
                id="history-digest-filter",
            ),
        ),
        rx.cond(
            LiveState.unread > HistoryState.loaded_unread,
            rx.button(
                t("history.new_alerts"),
                on_click=HistoryState.load,
                variant="soft",
                color_scheme="amber",
                width="100%",
                margin_top="12px",
                id="history-refresh",
            ),
        ),
        rx.box(
            rx.cond(
                HistoryState.rows.length() > 0,
                rx.foreach(HistoryState.rows, _row),
                rx.text(t("history.empty"), color="var(--gray-10)", padding="12px"),
            ),
            margin_top="12px",
            id="history-list",
        ),
    )
