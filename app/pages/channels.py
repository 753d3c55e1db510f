"""Notification channels (/settings/channels): add a Discord webhook or a Telegram chat,
turn this browser's push notifications on, switch channels on and off, delete them."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import SELECT_STYLE, error_text, notice_text, page_frame
from app.states.channels import ChannelsState


def _row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.flex(
            rx.text(row["kind_text"], " · ", row["label"], weight="bold", size="2"),
            rx.text(row["hint"], size="1", color="var(--gray-10)"),
            rx.cond(row["error"] != "", rx.text(row["error"], size="1", color="var(--red-11)")),
            direction="column",
            min_width="0",
            flex="1",
        ),
        rx.badge(row["state"], variant="soft"),
        rx.button(
            rx.cond(row["enabled"] != "", t("channels.turn_off"), t("channels.turn_on")),
            on_click=ChannelsState.toggle(row["id"]),
            size="1",
            variant="soft",
            id="ch-toggle-" + row["id"].to(str),
        ),
        rx.button(
            t("channels.test"),
            on_click=ChannelsState.test_send(row["id"]),
            size="1",
            variant="soft",
            color_scheme="gray",
            id="ch-test-" + row["id"].to(str),
        ),
        rx.button(
            t("channels.delete"),
            on_click=ChannelsState.delete(row["id"]),
            size="1",
            variant="soft",
            color_scheme="red",
            id="ch-delete-" + row["id"].to(str),
        ),
        align="center",
        gap="8px",
        wrap="wrap",
        padding="10px 0",
        border_bottom="1px solid var(--gray-a4)",
        class_name="ch-row",
    )


def _add_form() -> rx.Component:
    return rx.form(
        rx.flex(
            rx.el.select(
                rx.el.option(t("channels.kind.discord"), value="discord"),
                rx.el.option(t("channels.kind.telegram"), value="telegram"),
                name="kind",
                id="ch-kind",
                style={**SELECT_STYLE, "width": "auto"},
            ),
            rx.input(
                name="address",
                id="ch-address",
                placeholder=t("channels.address_placeholder"),
                type="password",
                auto_complete="off",
                size="3",
                flex="1",
                min_width="min(100%, 240px)",
            ),
            rx.input(
                name="label",
                id="ch-label",
                placeholder=t("channels.label_placeholder"),
                max_length=60,
                size="3",
                min_width="min(100%, 160px)",
            ),
            rx.button(t("channels.add"), type="submit", size="3", id="ch-add"),
            gap="8px",
            wrap="wrap",
            width="100%",
        ),
        error_text(ChannelsState.field_errors.get("address", "").to(str), "ch-error-address"),
        error_text(ChannelsState.field_errors.get("label", "").to(str), "ch-error-label"),
        error_text(ChannelsState.field_errors.get("kind", "").to(str), "ch-error-kind"),
        on_submit=ChannelsState.add,
        key=ChannelsState.form_key,
        width="100%",
    )


def channels_page() -> rx.Component:
    return page_frame(
        rx.heading(t("channels.title"), size="6"),
        rx.text(t("channels.help"), size="2", color="var(--gray-10)"),
        rx.box(_add_form(), margin_y="12px"),
        rx.button(
            rx.icon("bell-ring", size=14),
            t("channels.push_this_browser"),
            # pwa.js handles the click: subscribing needs the service worker, and the
            # CSP allows no inline or eval'd script.
            variant="soft",
            id="ch-push",
            type="button",
        ),
        error_text(ChannelsState.error, "ch-error"),
        notice_text(ChannelsState.notice, "ch-notice"),
        rx.box(
            rx.cond(
                ChannelsState.rows.length() > 0,
                rx.foreach(ChannelsState.rows, _row),
                rx.text(t("channels.empty"), size="2", color="var(--gray-10)"),
            ),
            id="ch-list",
            margin_top="12px",
        ),
    )
