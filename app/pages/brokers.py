"""Broker accounts (/settings/brokers): a write-only form for KIS keys, and the masked list.

Secret inputs are ``type=password`` with ``autocomplete=new-password`` (so browsers
neither display nor offer to fill them); after a save the form remounts empty.
The list shows only the label, paper or real, the masked account and the date.
"""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import error_text, notice_text, page_frame
from app.states.brokers import BrokersState
from app.states.session import SessionState

_SELECT_STYLE = {
    "height": "40px",
    "padding": "0 8px",
    "border_radius": "6px",
    "border": "1px solid var(--gray-a7)",
    "background": "var(--color-surface)",
    "color": "inherit",
    "font_size": "16px",
}


def _field(label_key: str, control: rx.Component, field: str) -> rx.Component:
    return rx.flex(
        rx.text(t(label_key), as_="label", size="2", weight="medium", html_for=f"broker-{field}"),
        control,
        error_text(BrokersState.field_errors.get(field, "").to(str), f"broker-error-{field}"),
        direction="column",
        spacing="1",
        min_width="min(100%, 220px)",
        flex="1",
    )


def _secret_input(field: str, **props: object) -> rx.Component:
    return rx.input(
        name=field,
        id=f"broker-{field}",
        type="password",
        auto_complete="new-password",
        spell_check=False,
        size="3",
        **props,
    )


def _form() -> rx.Component:
    return rx.form(
        rx.flex(
            _field(
                "brokers.label",
                rx.input(
                    name="label",
                    id="broker-label",
                    placeholder=t("brokers.label_placeholder"),
                    max_length=60,
                    size="3",
                    auto_complete="off",
                ),
                "label",
            ),
            _field(
                "brokers.mode",
                rx.el.select(
                    rx.el.option(t("brokers.mode.paper"), value="paper"),
                    rx.el.option(t("brokers.mode.real"), value="real"),
                    name="mode",
                    id="broker-mode",
                    style=_SELECT_STYLE,
                ),
                "mode",
            ),
            spacing="3",
            wrap="wrap",
        ),
        rx.flex(
            _field("brokers.app_key", _secret_input("app_key", max_length=128), "app_key"),
            _field("brokers.app_secret", _secret_input("app_secret", max_length=512), "app_secret"),
            spacing="3",
            wrap="wrap",
            margin_top="8px",
        ),
        rx.flex(
            _field(
                "brokers.account_no",
                _secret_input(
                    "account_no",
                    input_mode="numeric",
                    max_length=12,
                    placeholder=t("brokers.account_no_placeholder"),
                ),
                "account_no",
            ),
            _field(
                "brokers.product_code",
                rx.input(
                    name="product_code",
                    id="broker-product_code",
                    default_value="01",
                    input_mode="numeric",
                    max_length=2,
                    size="3",
                    auto_complete="off",
                ),
                "product_code",
            ),
            _field("brokers.hts_id", _secret_input("hts_id", max_length=32), "hts_id"),
            spacing="3",
            wrap="wrap",
            margin_top="8px",
        ),
        rx.button(t("brokers.save"), type="submit", size="3", margin_top="12px", id="save-broker"),
        on_submit=BrokersState.create,
        reset_on_submit=False,
        key=BrokersState.form_key,
    )


def _row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.flex(
            rx.text(row["label"], weight="bold"),
            rx.text(
                row["account"],
                " · ",
                SessionState.tr["brokers.added_on"].to(str).replace("{date}", row["created"]),
                size="2",
                color="var(--gray-11)",
            ),
            direction="column",
            flex="1",
            min_width="0",
        ),
        rx.badge(
            row["mode_text"],
            color_scheme=rx.cond(row["mode"] == "real", "red", "blue"),
        ),
        rx.button(
            t("brokers.test"),
            on_click=BrokersState.test_connection(row["id"]),
            variant="soft",
            size="1",
            class_name="broker-test",
        ),
        rx.button(
            t("brokers.delete"),
            on_click=BrokersState.delete(row["id"]),
            variant="soft",
            color_scheme="red",
            size="1",
        ),
        align="center",
        spacing="3",
        padding="12px",
        border_bottom="1px solid var(--gray-a4)",
        class_name="broker-row",
    )


def brokers_page() -> rx.Component:
    return page_frame(
        rx.heading(t("brokers.title"), size="6"),
        rx.text(t("brokers.intro"), size="2", color="var(--gray-11)", margin_top="4px"),
        rx.card(
            rx.heading(t("brokers.new"), size="3", margin_bottom="8px"),
            _form(),
            rx.text(t("brokers.write_only"), size="1", color="var(--gray-10)", margin_top="8px"),
            notice_text(BrokersState.notice, "brokers-notice"),
            error_text(BrokersState.error, "brokers-error"),
            margin_top="12px",
        ),
        rx.box(
            rx.cond(
                BrokersState.rows.length() > 0,
                rx.foreach(BrokersState.rows, _row),
                rx.text(t("brokers.empty"), color="var(--gray-10)", padding="12px"),
            ),
            margin_top="12px",
            id="brokers-list",
        ),
    )
