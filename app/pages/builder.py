"""The condition rule builder at ``/rules/new`` (``?edit=<id>`` edits a stored rule).

Every input is controlled by ``RuleBuilderState.form`` under a flat key (``c0.left``,
``cooldown_minutes``...). Its id is ``rb-<key>`` and its error's id ``error-<key>``,
with dots as dashes, so tests and screen readers find them. The five condition rows
are fixed slots shown while ``count`` covers them, and each slot switches its inputs
on the row's type. Inputs wrap and take the full width on a phone.
"""

from __future__ import annotations

from collections.abc import Callable

import reflex as rx

from app.components.i18n import t
from app.components.layout import SELECT_STYLE, error_text, notice_text, page_frame
from app.services.rule_form import CONDITION_TYPES
from app.states.builder import RuleBuilderState
from engines.market import Timeframe
from engines.rules.conditions import MAX_CONDITIONS, PLACEHOLDERS

COMPARE_OPS = ("crossing", "crossing_up", "crossing_down", "greater", "less")
CHANNEL_OPS = ("entering", "exiting", "inside", "outside")
DIRECTIONS = ("up", "down")
UNITS = ("pct", "value")
BREAKOUT_SIDES = ("resistance", "support")
EXTREME_SIDES = ("high", "low")
FREQUENCIES = ("once", "once_per_bar", "once_per_bar_close", "cooldown")
QUIET_ACTIONS = ("defer", "drop")
LOGICS = ("and", "or")
TEMPLATE_TOKENS = " ".join([*(f"{{{name}}}" for name in PLACEHOLDERS), "{v1}", "{v2}", "…"])


def _slug(key: str) -> str:
    return key.replace(".", "-")


def _value(key: str) -> rx.Var:
    return RuleBuilderState.form.get(key, "").to(str)


def _error(key: str) -> rx.Component:
    """The input's message. Always in the page (empty when the input is fine), so its id
    is stable and screen readers hear it change."""
    return rx.text(
        RuleBuilderState.field_errors.get(key, "").to(str),
        id=f"error-{_slug(key)}",
        color="var(--red-11)",
        size="2",
        aria_live="polite",
    )


def _field(
    key: str, label_key: str, control: rx.Component, help_key: str | None = None
) -> rx.Component:
    """Label, control, optional help line, and the input's own error message."""
    return rx.flex(
        rx.text(t(label_key), as_="label", size="2", weight="medium", html_for=f"rb-{_slug(key)}"),
        control,
        rx.text(t(help_key), size="1", color="var(--gray-10)") if help_key else rx.fragment(),
        _error(key),
        direction="column",
        spacing="1",
        min_width="min(100%, 180px)",
        flex="1",
    )


def _text(
    key: str,
    placeholder_key: str | None = None,
    *,
    input_mode: str | None = None,
    type_: str = "text",
) -> rx.Component:
    props: dict[str, object] = {}
    if placeholder_key:
        props["placeholder"] = t(placeholder_key)
    if input_mode:
        props["input_mode"] = input_mode
    return rx.input(
        id=f"rb-{_slug(key)}",
        value=_value(key),
        on_change=lambda v: RuleBuilderState.set_field(key, v),
        debounce_timeout=300,
        type=type_,
        size="3",
        width="100%",
        auto_complete="off",
        **props,
    )


def _select(
    key: str,
    options: list[tuple[str, str]],
    on_change: Callable[[rx.Var], rx.event.EventSpec] | None = None,
) -> rx.Component:
    """A native select: the phone's own picker, and simple for tests to drive."""
    return rx.el.select(
        *[rx.el.option(t(label), value=value) for value, label in options],
        id=f"rb-{_slug(key)}",
        value=_value(key),
        on_change=on_change or (lambda v: RuleBuilderState.set_field(key, v)),
        style=SELECT_STYLE,
    )


def _options(values: tuple[str, ...], prefix: str) -> list[tuple[str, str]]:
    return [(v, f"{prefix}.{v}") for v in values]


# ---- condition rows ---------------------------------------------------------------


def _operand(i: int, name: str) -> rx.Component:
    key = f"c{i}.{name}"
    return _field(key, f"builder.f.{name}", _text(key, f"builder.ph.{name}"))


def _number(i: int, name: str, help_key: str | None = None) -> rx.Component:
    key = f"c{i}.{name}"
    return _field(
        key,
        f"builder.f.{name}",
        _text(key, f"builder.ph.{name}", input_mode="decimal"),
        help_key,
    )


def _choice(i: int, name: str, values: tuple[str, ...], prefix: str) -> rx.Component:
    key = f"c{i}.{name}"
    return _field(key, f"builder.f.{name}", _select(key, _options(values, prefix)))


def _inputs(*fields: rx.Component) -> rx.Component:
    return rx.flex(*fields, spacing="3", wrap="wrap", width="100%")


def _row_body(i: int) -> rx.Component:
    """The inputs of row ``i`` for its current type."""
    return rx.match(
        _value(f"c{i}.type"),
        (
            "compare",
            _inputs(
                _operand(i, "left"),
                _choice(i, "op", COMPARE_OPS, "builder.op"),
                _operand(i, "right"),
            ),
        ),
        (
            "channel",
            _inputs(
                _operand(i, "value"),
                _choice(i, "op", CHANNEL_OPS, "builder.op"),
                _operand(i, "lower"),
                _operand(i, "upper"),
            ),
        ),
        (
            "move",
            _inputs(
                _operand(i, "value"),
                _choice(i, "direction", DIRECTIONS, "builder.dir"),
                _number(i, "amount"),
                _choice(i, "unit", UNITS, "builder.unit"),
                _number(i, "bars"),
            ),
        ),
        (
            "change",
            _inputs(_choice(i, "direction", DIRECTIONS, "builder.dir"), _number(i, "pct")),
        ),
        (
            "breakout",
            _inputs(
                _choice(i, "side", BREAKOUT_SIDES, "builder.side"),
                _number(i, "level", "builder.help.level"),
                _number(i, "pivot_left"),
                _number(i, "pivot_right"),
            ),
        ),
        (
            "volume_spike",
            _inputs(_number(i, "factor"), _number(i, "window")),
        ),
        (
            "new_extreme",
            _inputs(_choice(i, "side", EXTREME_SIDES, "builder.side"), _number(i, "days")),
        ),
        (
            "gap",
            _inputs(_choice(i, "direction", DIRECTIONS, "builder.dir"), _number(i, "pct")),
        ),
        rx.fragment(),
    )


def _condition_row(i: int) -> rx.Component:
    type_key = f"c{i}.type"
    return rx.box(
        rx.flex(
            rx.badge(str(i + 1), variant="soft", size="2"),
            rx.box(
                _field(
                    type_key,
                    "builder.f.type",
                    _select(
                        type_key,
                        _options(CONDITION_TYPES, "builder.type"),
                        on_change=lambda v: RuleBuilderState.set_type(i, v),
                    ),
                ),
                flex="1",
                min_width="0",
            ),
            rx.cond(
                RuleBuilderState.count > 1,
                rx.button(
                    t("builder.remove_condition"),
                    on_click=RuleBuilderState.remove_condition(i),
                    variant="soft",
                    color_scheme="red",
                    size="2",
                    type="button",
                    id=f"rb-remove-c{i}",
                ),
            ),
            spacing="3",
            align="end",
            wrap="wrap",
            width="100%",
        ),
        rx.box(_row_body(i), margin_top="8px"),
        padding="12px",
        border="1px solid var(--gray-a5)",
        border_radius="8px",
        width="100%",
        class_name="rb-condition",
        id=f"rb-row-c{i}",
    )


def _conditions() -> rx.Component:
    return rx.flex(
        rx.flex(
            rx.heading(t("builder.conditions"), size="3"),
            rx.spacer(),
            _field(
                "logic",
                "builder.f.logic",
                _select("logic", _options(LOGICS, "builder.logic")),
            ),
            spacing="3",
            align="end",
            wrap="wrap",
            width="100%",
        ),
        rx.text(t("builder.help.operand"), size="1", color="var(--gray-10)"),
        *[rx.cond(RuleBuilderState.count > i, _condition_row(i)) for i in range(MAX_CONDITIONS)],
        rx.cond(
            RuleBuilderState.count < MAX_CONDITIONS,
            rx.button(
                t("builder.add_condition"),
                on_click=RuleBuilderState.add_condition,
                variant="outline",
                size="2",
                type="button",
                id="rb-add-condition",
            ),
            rx.text(t("builder.max_conditions"), size="1", color="var(--gray-10)"),
        ),
        direction="column",
        spacing="3",
        width="100%",
    )


# ---- the rest of the form -----------------------------------------------------------


def _basics() -> rx.Component:
    return rx.flex(
        _field("symbol", "rules.symbol", _text("symbol", "rules.symbol_placeholder")),
        _field("name", "rules.name", _text("name", "builder.ph.name")),
        _field(
            "timeframe",
            "builder.f.timeframe",
            _select("timeframe", [(tf.value, f"tf.{tf.value}") for tf in Timeframe]),
        ),
        spacing="3",
        wrap="wrap",
        width="100%",
    )


def _trigger() -> rx.Component:
    return rx.flex(
        rx.heading(t("builder.trigger"), size="3", width="100%"),
        _field(
            "frequency",
            "builder.f.frequency",
            _select("frequency", _options(FREQUENCIES, "builder.freq")),
        ),
        rx.cond(
            RuleBuilderState.form.get("frequency", "") == "cooldown",
            _field(
                "cooldown_minutes",
                "builder.f.cooldown_minutes",
                _text("cooldown_minutes", input_mode="numeric"),
            ),
        ),
        _field(
            "hysteresis_pct",
            "builder.f.hysteresis_pct",
            _text("hysteresis_pct", input_mode="decimal"),
            "builder.help.hysteresis",
        ),
        _field(
            "expires_at",
            "builder.f.expires_at",
            _text("expires_at", type_="datetime-local"),
            "builder.help.expires",
        ),
        spacing="3",
        wrap="wrap",
        width="100%",
    )


def _delivery() -> rx.Component:
    return rx.flex(
        rx.heading(t("builder.delivery"), size="3", width="100%"),
        rx.flex(
            _field("quiet_start", "builder.f.quiet_start", _text("quiet_start", type_="time")),
            _field("quiet_end", "builder.f.quiet_end", _text("quiet_end", type_="time")),
            _field(
                "quiet_action",
                "builder.f.quiet_action",
                _select("quiet_action", _options(QUIET_ACTIONS, "builder.quiet")),
            ),
            spacing="3",
            wrap="wrap",
            width="100%",
        ),
        rx.text(t("builder.help.quiet"), size="1", color="var(--gray-10)"),
        rx.flex(
            rx.text(t("builder.f.channels"), size="2", weight="medium"),
            rx.flex(
                rx.checkbox(t("builder.channel_in_app"), checked=True, disabled=True),
                rx.checkbox(
                    t("channel.email"),
                    checked=RuleBuilderState.form.get("channel_email", "") == "on",
                    on_change=RuleBuilderState.toggle_email,
                    id="rb-channel_email",
                ),
                spacing="4",
                wrap="wrap",
            ),
            _error("channel_email"),
            direction="column",
            spacing="2",
            width="100%",
        ),
        rx.flex(
            rx.text(
                t("builder.f.template"),
                as_="label",
                size="2",
                weight="medium",
                html_for="rb-template",
            ),
            rx.text_area(
                id="rb-template",
                value=_value("template"),
                on_change=lambda v: RuleBuilderState.set_field("template", v),
                debounce_timeout=300,
                placeholder=t("builder.ph.template"),
                rows="3",
                width="100%",
                size="3",
            ),
            rx.text(
                t("builder.help.template"),
                " ",
                rx.code(TEMPLATE_TOKENS, variant="ghost"),
                size="1",
                color="var(--gray-10)",
            ),
            _error("template"),
            direction="column",
            spacing="1",
            width="100%",
        ),
        spacing="3",
        wrap="wrap",
        width="100%",
    )


def _preview() -> rx.Component:
    return rx.flex(
        rx.flex(
            rx.heading(t("builder.preview"), size="3"),
            rx.spacer(),
            rx.button(
                t("builder.run_preview"),
                on_click=RuleBuilderState.run_preview,
                variant="soft",
                size="2",
                type="button",
                id="rb-preview",
            ),
            align="center",
            spacing="3",
            wrap="wrap",
            width="100%",
        ),
        rx.text(t("builder.help.preview"), size="1", color="var(--gray-10)"),
        rx.cond(
            RuleBuilderState.preview_text != "",
            rx.text(RuleBuilderState.preview_text, size="2", id="rb-preview-text"),
        ),
        rx.cond(
            RuleBuilderState.preview_ready,
            rx.box(
                rx.plotly.finance(
                    data=RuleBuilderState.figure,
                    config={"displayModeBar": False, "responsive": True},
                    use_resize_handler=True,
                    width="100%",
                    height="360px",
                    id="rb-preview-chart",
                ),
                width="100%",
                overflow="hidden",
            ),
        ),
        direction="column",
        spacing="2",
        width="100%",
    )


def builder_page() -> rx.Component:
    return page_frame(
        rx.flex(
            rx.heading(
                rx.cond(
                    RuleBuilderState.editing_id != "",
                    t("builder.title_edit"),
                    t("builder.title_new"),
                ),
                size="6",
            ),
            rx.spacer(),
            rx.link(t("builder.back"), href="/rules", size="2", id="rb-back"),
            align="center",
            spacing="3",
            wrap="wrap",
        ),
        rx.text(t("builder.intro"), size="2", color="var(--gray-11)", margin_top="4px"),
        error_text(RuleBuilderState.error, "builder-error"),
        notice_text(RuleBuilderState.notice, "builder-notice"),
        rx.flex(
            rx.card(_basics(), width="100%"),
            rx.card(_conditions(), width="100%"),
            rx.card(_trigger(), width="100%"),
            rx.card(_delivery(), width="100%"),
            rx.card(_preview(), width="100%"),
            error_text(RuleBuilderState.field_errors.get("form", "").to(str), "error-form"),
            rx.flex(
                rx.button(
                    rx.cond(
                        RuleBuilderState.editing_id != "",
                        t("builder.save_edit"),
                        t("builder.save_new"),
                    ),
                    on_click=RuleBuilderState.save,
                    size="3",
                    type="button",
                    id="rb-save",
                ),
                rx.link(t("builder.cancel"), href="/rules", size="2"),
                spacing="4",
                align="center",
                wrap="wrap",
            ),
            direction="column",
            spacing="3",
            margin_top="12px",
            # room to scroll the save button above the alert toast pinned to the bottom
            padding_bottom="160px",
            width="100%",
            min_width="0",
        ),
    )
