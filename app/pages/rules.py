"""Alert rules: the quick price-alert form, the list, and the way to the condition builder."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import error_text, notice_text, page_frame
from app.states.builder import RuleActionsState
from app.states.pages import RulesState

OPS = ("cross_up", "cross_down", "cross", "above", "below")
REPEATS = ("once", "rearm")


def _field(label_key: str, control: rx.Component, field: str) -> rx.Component:
    return rx.flex(
        rx.text(t(label_key), as_="label", size="2", weight="medium", html_for=f"rule-{field}"),
        control,
        error_text(RulesState.field_errors.get(field, "").to(str), f"error-{field}"),
        direction="column",
        spacing="1",
        min_width="min(100%, 200px)",
        flex="1",
    )


_SELECT_STYLE = {
    "height": "40px",
    "padding": "0 8px",
    "border_radius": "6px",
    "border": "1px solid var(--gray-a7)",
    "background": "var(--color-surface)",
    "color": "inherit",
    "font_size": "16px",
}


def _form() -> rx.Component:
    return rx.form(
        rx.flex(
            _field(
                "rules.symbol",
                rx.input(
                    name="symbol",
                    id="rule-symbol",
                    # the watchlist's bell links here with ?symbol=CODE
                    default_value=RulesState.router.url.query_parameters.get("symbol", ""),
                    placeholder=t("rules.symbol_placeholder"),
                    size="3",
                    auto_complete="off",
                ),
                "symbol",
            ),
            _field(
                "rules.condition",
                rx.el.select(
                    *[rx.el.option(t(f"op.{op}"), value=op) for op in OPS],
                    name="op",
                    id="rule-op",
                    style=_SELECT_STYLE,
                ),
                "op",
            ),
            _field(
                "rules.level",
                rx.input(
                    name="level",
                    id="rule-level",
                    placeholder=t("rules.level_placeholder"),
                    input_mode="numeric",
                    size="3",
                    auto_complete="off",
                ),
                "level",
            ),
            _field(
                "rules.repeat",
                rx.el.select(
                    *[rx.el.option(t(f"rules.repeat.{r}"), value=r) for r in REPEATS],
                    name="repeat",
                    id="rule-repeat",
                    style=_SELECT_STYLE,
                ),
                "repeat",
            ),
            _field(
                "rules.name",
                rx.input(name="name", id="rule-name", size="3", max_length=100),
                "name",
            ),
            spacing="3",
            wrap="wrap",
        ),
        rx.button(t("rules.create"), type="submit", size="3", margin_top="12px", id="create-rule"),
        on_submit=RulesState.create,
        key=RulesState.form_key,
    )


def _row_button(label_key: str, event: rx.event.EventSpec, class_name: str) -> rx.Component:
    return rx.button(t(label_key), on_click=event, variant="soft", size="1", class_name=class_name)


def _row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.flex(
            rx.text(
                row["name"], " ", rx.text.span(row["code"], color="var(--gray-10)"), weight="bold"
            ),
            rx.text(row["condition"], " ", row["level"], size="2", class_name="rule-summary"),
            rx.text(
                row["rule_name"],
                " ",
                row["repeat"],
                " ",
                row["fired"],
                size="1",
                color="var(--gray-10)",
            ),
            direction="column",
            flex="1 1 240px",
            min_width="0",
        ),
        rx.flex(
            rx.cond(
                row["kind"] == "condition",
                rx.badge(t("rules.kind.condition"), variant="outline", color_scheme="indigo"),
            ),
            rx.badge(
                row["status_text"],
                color_scheme=rx.cond(row["status"] == "active", "green", "gray"),
                class_name="rule-status",
            ),
            rx.cond(
                row["kind"] == "condition",
                rx.button(
                    rx.link(
                        t("rules.edit"),
                        href="/rules/new?edit=" + row["id"].to(str),
                        class_name="rule-edit",
                        underline="none",
                    ),
                    as_child=True,
                    variant="soft",
                    size="1",
                ),
            ),
            rx.cond(
                row["status"] == "active",
                _row_button("rules.disable", RuleActionsState.toggle(row["id"]), "rule-toggle"),
                _row_button("rules.enable", RuleActionsState.toggle(row["id"]), "rule-toggle"),
            ),
            _row_button("rules.duplicate", RuleActionsState.duplicate(row["id"]), "rule-duplicate"),
            rx.button(
                t("rules.delete"),
                on_click=RulesState.delete(row["id"]),
                variant="soft",
                color_scheme="red",
                size="1",
                class_name="rule-delete",
            ),
            spacing="2",
            align="center",
            wrap="wrap",
        ),
        align="center",
        spacing="3",
        wrap="wrap",
        padding="12px",
        border_bottom="1px solid var(--gray-a4)",
        class_name="rule-row",
    )


def rules_page() -> rx.Component:
    return page_frame(
        rx.flex(
            rx.heading(t("rules.title"), size="6"),
            rx.spacer(),
            rx.button(
                rx.link(
                    t("rules.new_condition"),
                    href="/rules/new",
                    id="new-condition-rule",
                    underline="none",
                ),
                as_child=True,
                size="3",
            ),
            align="center",
            spacing="3",
            wrap="wrap",
        ),
        rx.text(t("rules.condition_hint"), size="2", color="var(--gray-11)", margin_top="4px"),
        notice_text(RuleActionsState.notice, "rules-action-notice"),
        error_text(RuleActionsState.error, "rules-action-error"),
        rx.card(
            rx.heading(t("rules.new"), size="3", margin_bottom="8px"),
            _form(),
            notice_text(RulesState.notice, "rules-notice"),
            margin_top="12px",
        ),
        rx.box(
            rx.cond(
                RulesState.rows.length() > 0,
                rx.foreach(RulesState.rows, _row),
                rx.text(t("rules.empty"), color="var(--gray-10)", padding="12px"),
            ),
            margin_top="12px",
            padding_bottom="120px",  # the last row's buttons can scroll above the alert toast
            id="rules-list",
        ),
    )
