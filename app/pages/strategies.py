"""Strategies (/strategies): the catalogue, the config editor, the user's configs with
their attachments (mode, kill switch, orders) and the go-live dialog.

Everything wraps (``flex-wrap``, ``min(100%, …)`` widths) and tables scroll inside
their own box, so the page works at 390 px as well as on a desktop.
"""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import SELECT_STYLE, error_text, notice_text, page_frame
from app.components.params_form import params_form
from app.pages.strategy_tables import cell, scroll_table
from app.states.strategies import TIMEFRAMES, AttachmentsState, StrategiesState

GRAY = "var(--gray-10)"
MODES = ("alert", "paper", "live")


# ---- catalogue ------------------------------------------------------------------------


def _catalogue_card(item: rx.Var) -> rx.Component:
    name = item["name"].to(str)
    return rx.card(
        rx.flex(
            rx.heading(item["title"], size="3"),
            rx.text(item["description"], size="2", color="var(--gray-11)"),
            rx.spacer(),
            rx.button(
                t("sp.new"),
                on_click=StrategiesState.new_config(name),
                size="2",
                variant="soft",
                id="sp-new-" + name,
                width="fit-content",
            ),
            direction="column",
            spacing="2",
            height="100%",
        ),
        class_name="sp-catalogue-card",
    )


def _catalogue() -> rx.Component:
    return rx.box(
        rx.heading(t("sp.catalogue"), size="4", margin_bottom="8px"),
        rx.grid(
            rx.foreach(StrategiesState.catalogue, _catalogue_card),
            columns=rx.breakpoints(initial="1", sm="2", md="3"),
            gap="10px",
            width="100%",
        ),
        id="sp-catalogue",
        margin_y="12px",
    )


# ---- editor ---------------------------------------------------------------------------


def _editor_error(key: str) -> rx.Component:
    return rx.text(
        StrategiesState.field_errors.get(key, "").to(str),
        id=f"sp-error-{key}",
        color="var(--red-11)",
        size="2",
        aria_live="polite",
    )


def _editor() -> rx.Component:
    return rx.card(
        rx.flex(
            rx.heading(
                rx.cond(StrategiesState.editing_id != "", t("sp.edit_title"), t("sp.new_title")),
                " · ",
                StrategiesState.editor_title,
                size="4",
            ),
            rx.flex(
                rx.flex(
                    rx.text(
                        t("sp.label"), as_="label", size="2", weight="medium", html_for="sp-label"
                    ),
                    rx.input(
                        id="sp-label",
                        value=StrategiesState.form.get("label", "").to(str),
                        on_change=lambda v: StrategiesState.set_field("label", v),
                        debounce_timeout=250,
                        placeholder=t("sp.label_placeholder"),
                        max_length=80,
                        size="3",
                        width="100%",
                    ),
                    _editor_error("label"),
                    direction="column",
                    spacing="1",
                    flex="2",
                    min_width="min(100%, 220px)",
                ),
                rx.flex(
                    rx.text(
                        t("sp.timeframe"),
                        as_="label",
                        size="2",
                        weight="medium",
                        html_for="sp-timeframe",
                    ),
                    rx.el.select(
                        *[rx.el.option(t(f"tf.{tf}"), value=tf) for tf in TIMEFRAMES],
                        id="sp-timeframe",
                        value=StrategiesState.form.get("timeframe", "1d").to(str),
                        on_change=lambda v: StrategiesState.set_field("timeframe", v),
                        style=SELECT_STYLE,
                    ),
                    _editor_error("timeframe"),
                    direction="column",
                    spacing="1",
                    flex="1",
                    min_width="min(100%, 140px)",
                ),
                spacing="3",
                wrap="wrap",
                width="100%",
            ),
            rx.heading(t("sp.params"), size="3"),
            params_form(
                StrategiesState.fields,
                StrategiesState.params,
                StrategiesState.choices,
                StrategiesState.field_errors,
                StrategiesState.set_field,
            ),
            rx.text(t("sp.params_help"), size="1", color=GRAY),
            _editor_error("strategy"),
            rx.flex(
                rx.button(
                    rx.cond(StrategiesState.editing_id != "", t("sp.save_edit"), t("sp.save_new")),
                    on_click=StrategiesState.save,
                    disabled=StrategiesState.invalid,
                    size="3",
                    id="sp-save",
                ),
                rx.button(
                    t("sp.cancel"),
                    on_click=StrategiesState.close_editor,
                    variant="soft",
                    color_scheme="gray",
                    size="3",
                    id="sp-cancel",
                ),
                spacing="3",
                wrap="wrap",
            ),
            direction="column",
            spacing="3",
            width="100%",
        ),
        id="sp-editor",
        width="100%",
        margin_y="12px",
    )


# ---- configs and attachments ------------------------------------------------------------


def _orders_table() -> rx.Component:
    def row(o: rx.Var) -> rx.Component:
        return rx.el.tr(
            cell(o["time"]),
            cell(o["side"]),
            cell(o["qty"], num=True),
            cell(o["price"], num=True),
            cell(o["state"]),
            cell(o["reason"]),
            class_name="sp-order",
        )

    return rx.box(
        rx.cond(
            AttachmentsState.orders.length() > 0,
            scroll_table(
                "sp-orders-table",
                [
                    ("sp.orders.time", False),
                    ("sp.orders.side", False),
                    ("sp.orders.qty", True),
                    ("sp.orders.price", True),
                    ("sp.orders.state", False),
                    ("sp.orders.reason", False),
                ],
                AttachmentsState.orders,
                row,
            ),
            rx.text(t("sp.orders.none"), size="2", color=GRAY),
        ),
        padding_y="6px",
        width="100%",
        id="sp-orders",
    )


def _mode_select(att: rx.Var) -> rx.Component:
    return rx.el.select(
        *[rx.el.option(t(f"strategy_exec.mode.{m}"), value=m) for m in MODES],
        value=att["mode"].to(str),
        on_change=lambda v: AttachmentsState.set_mode(att["id"].to(str), v),
        id="sp-mode-" + att["id"].to(str),
        aria_label=t("sp.mode"),
        style={**SELECT_STYLE, "width": "auto", "height": "32px", "font_size": "14px"},
    )


def _attachment(att: rx.Var) -> rx.Component:
    aid = att["id"].to(str)
    return rx.box(
        rx.flex(
            rx.text(att["symbol"], weight="bold", size="2"),
            _mode_select(att),
            rx.badge(att["state_text"], variant="soft"),
            rx.cond(
                att["killed"] != "",
                rx.badge(t("sp.killed_badge"), color_scheme="red", variant="solid"),
            ),
            rx.cond(
                att["mode"] == "live",
                rx.text(att["limits"], size="1", color=GRAY),
            ),
            rx.spacer(),
            rx.cond(
                att["killed"] != "",
                rx.button(
                    t("sp.revive"),
                    on_click=AttachmentsState.revive(aid),
                    size="1",
                    variant="soft",
                    id="sp-revive-" + aid,
                ),
                rx.button(
                    t("sp.kill"),
                    on_click=AttachmentsState.kill(aid),
                    size="1",
                    color_scheme="red",
                    id="sp-kill-" + aid,
                ),
            ),
            rx.button(
                t("sp.orders"),
                on_click=AttachmentsState.show_orders(aid),
                size="1",
                variant="soft",
                id="sp-orders-" + aid,
            ),
            rx.button(
                t("sp.detach"),
                on_click=AttachmentsState.detach(aid),
                size="1",
                variant="ghost",
                color_scheme="gray",
                id="sp-detach-" + aid,
            ),
            align="center",
            gap="8px",
            wrap="wrap",
        ),
        rx.cond(att["error"] != "", rx.text(att["error"], size="1", color="var(--red-11)")),
        rx.cond(AttachmentsState.orders_for == aid, _orders_table()),
        padding="8px 0",
        border_top="1px solid var(--gray-a4)",
        class_name="sp-attachment",
        data_symbol=att["symbol"],
        data_id=aid,
    )


def _attach_form(config_id: rx.Var) -> rx.Component:
    cid = config_id.to(str)
    return rx.form(
        rx.flex(
            rx.el.input(type="hidden", name="config_id", value=cid),
            rx.input(
                name="symbol",
                id="sp-attach-symbol-" + cid,
                placeholder=t("sp.attach_placeholder"),
                size="2",
                flex="1",
                min_width="min(100%, 160px)",
                auto_complete="off",
            ),
            rx.el.select(
                *[rx.el.option(t(f"strategy_exec.mode.{m}"), value=m) for m in ("alert", "paper")],
                name="mode",
                id="sp-attach-mode-" + cid,
                aria_label=t("sp.mode"),
                style={**SELECT_STYLE, "width": "auto", "height": "32px", "font_size": "14px"},
            ),
            rx.button(t("sp.attach"), type="submit", size="2", id="sp-attach-" + cid),
            gap="8px",
            wrap="wrap",
            align="center",
            width="100%",
        ),
        rx.text(
            AttachmentsState.field_errors.get(cid + ".symbol", "").to(str),
            AttachmentsState.field_errors.get(cid + ".mode", "").to(str),
            size="2",
            color="var(--red-11)",
            id="sp-attach-error-" + cid,
        ),
        on_submit=AttachmentsState.attach,
        reset_on_submit=True,
        margin_top="8px",
    )


def _config_card(cfg: rx.Var) -> rx.Component:
    cid = cfg["id"].to(str)
    return rx.card(
        rx.flex(
            rx.flex(
                rx.heading(cfg["label"], size="3"),
                rx.text(
                    cfg["title"],
                    " · ",
                    cfg["timeframe"],
                    size="2",
                    color=GRAY,
                ),
                rx.text(cfg["params"], size="1", color=GRAY, word_break="break-word"),
                direction="column",
                spacing="1",
                flex="1",
                min_width="min(100%, 200px)",
            ),
            rx.flex(
                rx.link(
                    rx.button(t("sp.backtest"), size="2", variant="soft", id="sp-backtest-" + cid),
                    href="/backtest?config=" + cid,
                ),
                rx.button(
                    t("sp.edit"),
                    on_click=StrategiesState.edit_config(cid),
                    size="2",
                    variant="soft",
                    id="sp-edit-" + cid,
                ),
                rx.button(
                    t("sp.delete"),
                    on_click=StrategiesState.delete_config(cid),
                    size="2",
                    variant="ghost",
                    color_scheme="red",
                    id="sp-delete-" + cid,
                ),
                gap="6px",
                wrap="wrap",
                align="start",
            ),
            gap="8px",
            wrap="wrap",
            width="100%",
        ),
        rx.foreach(
            StrategiesState.attachments,
            lambda att: rx.cond(att["config_id"] == cid, _attachment(att)),
        ),
        _attach_form(cfg["id"]),
        class_name="sp-config",
        data_id=cid,
        width="100%",
    )


def _configs() -> rx.Component:
    return rx.box(
        rx.flex(
            rx.heading(t("sp.mine"), size="4"),
            rx.spacer(),
            rx.button(
                rx.icon("octagon-x", size=14),
                t("sp.kill_all"),
                on_click=AttachmentsState.kill_all,
                color_scheme="red",
                size="2",
                id="sp-kill-all",
            ),
            align="center",
            wrap="wrap",
            gap="8px",
            margin_bottom="8px",
        ),
        rx.text(t("sp.modes_help"), size="1", color=GRAY, margin_bottom="8px"),
        rx.cond(
            StrategiesState.configs.length() > 0,
            rx.flex(
                rx.foreach(StrategiesState.configs, _config_card),
                direction="column",
                gap="10px",
            ),
            rx.text(t("sp.none"), size="2", color=GRAY, id="sp-none"),
        ),
        id="sp-configs",
        margin_y="12px",
    )


# ---- the go-live dialog ------------------------------------------------------------------


def _live_error(key: str) -> rx.Component:
    return rx.text(
        AttachmentsState.live_errors.get(key, "").to(str),
        id=f"sp-live-error-{key}",
        size="2",
        color="var(--red-11)",
    )


def _live_input(key: str, label_key: str) -> rx.Component:
    return rx.flex(
        rx.text(t(label_key), as_="label", size="2", html_for=f"sp-live-{key}"),
        rx.input(name=key, id=f"sp-live-{key}", input_mode="numeric", size="2", width="100%"),
        _live_error(key),
        direction="column",
        spacing="1",
        flex="1",
        min_width="min(100%, 150px)",
    )


def _live_dialog() -> rx.Component:
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(t("sp.live_title"), " · ", AttachmentsState.live_symbol),
            rx.dialog.description(t("sp.live_warning"), size="2"),
            rx.form(
                rx.flex(
                    rx.text(
                        t("sp.live_account"), as_="label", size="2", html_for="sp-live-account"
                    ),
                    rx.cond(
                        AttachmentsState.accounts.length() > 0,
                        rx.el.select(
                            rx.foreach(
                                AttachmentsState.accounts,
                                lambda a: rx.el.option(a["label"], value=a["id"]),
                            ),
                            name="broker_account_id",
                            id="sp-live-account",
                            style=SELECT_STYLE,
                        ),
                        rx.link(t("sp.live_no_account"), href="/settings/brokers", size="2"),
                    ),
                    _live_error("broker_account_id"),
                    rx.flex(
                        _live_input("max_order_value", "sp.limit.value"),
                        _live_input("max_position_qty", "sp.limit.qty"),
                        _live_input("max_orders_per_day", "sp.limit.per_day"),
                        gap="8px",
                        wrap="wrap",
                    ),
                    rx.text(t("sp.live_type"), size="2"),
                    rx.code(AttachmentsState.phrase, id="sp-live-phrase"),
                    rx.input(
                        name="confirmation",
                        id="sp-live-confirmation",
                        size="2",
                        auto_complete="off",
                    ),
                    _live_error("confirmation"),
                    _live_error("attachment"),
                    rx.flex(
                        rx.button(
                            t("sp.live_confirm"), type="submit", color_scheme="red", id="sp-live-go"
                        ),
                        rx.button(
                            t("sp.cancel"),
                            type="button",
                            variant="soft",
                            color_scheme="gray",
                            on_click=AttachmentsState.close_live,
                        ),
                        gap="8px",
                        wrap="wrap",
                    ),
                    direction="column",
                    spacing="2",
                    margin_top="12px",
                ),
                on_submit=AttachmentsState.confirm_live,
            ),
            max_width="min(520px, calc(100vw - 24px))",
        ),
        open=AttachmentsState.live_for != "",
    )


def strategies_page() -> rx.Component:
    return page_frame(
        rx.heading(t("sp.title"), size="6"),
        rx.text(t("sp.intro"), size="2", color="var(--gray-11)", margin_top="4px"),
        error_text(StrategiesState.error, "sp-error"),
        notice_text(StrategiesState.notice, "sp-notice"),
        error_text(AttachmentsState.error, "sp-att-error"),
        notice_text(AttachmentsState.notice, "sp-att-notice"),
        _catalogue(),
        rx.cond(StrategiesState.editor_open, _editor()),
        _configs(),
        _live_dialog(),
        rx.box(height="120px"),
    )
