"""A strategy's parameter form, generated from its ``ParamField`` list.

The registry describes each parameter (kind, default, bounds, step, choices, i18n
keys), so a plugin strategy gets a working form without UI code: numbers become
number inputs with min/max/step (the browser's spinner then walks the same grid
the optimiser does), choices a native select, flags a checkbox. Labels, help and
messages arrive translated from the state, a plugin's own texts included (the
app's catalogs cannot know a plugin's keys).

Ids: the input of parameter ``fast`` is ``sp-fast`` and its message ``sp-error-fast``.
"""

from __future__ import annotations

from collections.abc import Callable

import reflex as rx

from app.components.layout import SELECT_STYLE

OnChange = Callable[[rx.Var, rx.Var], rx.event.EventSpec]


def _message(errors: rx.Var, name: rx.Var) -> rx.Component:
    """Always present (empty when fine), so the id is stable and screen readers hear it."""
    return rx.text(
        errors.get(name, "").to(str),
        id="sp-error-" + name.to(str),
        color="var(--red-11)",
        size="2",
        aria_live="polite",
    )


def _number(field: rx.Var, value: rx.Var, on_change: OnChange) -> rx.Component:
    name = field["name"].to(str)
    return rx.input(
        id="sp-" + name,
        name=name,
        type="number",
        min=field["low"].to(str),
        max=field["high"].to(str),
        step=field["step"].to(str),
        value=value,
        input_mode=rx.cond(field["kind"] == "int", "numeric", "decimal"),
        on_change=lambda v: on_change(name, v),
        debounce_timeout=250,
        size="3",
        width="100%",
    )


def _select(field: rx.Var, value: rx.Var, choices: rx.Var, on_change: OnChange) -> rx.Component:
    name = field["name"].to(str)
    return rx.el.select(
        rx.foreach(
            choices.get(name, []).to(list[dict[str, str]]),
            lambda c: rx.el.option(c["label"].to(str), value=c["value"].to(str)),
        ),
        id="sp-" + name,
        name=name,
        value=value,
        on_change=lambda v: on_change(name, v),
        style=SELECT_STYLE,
    )


def _checkbox(field: rx.Var, value: rx.Var, on_change: OnChange) -> rx.Component:
    name = field["name"].to(str)
    return rx.checkbox(
        id="sp-" + name,
        checked=value == "true",
        on_change=lambda checked: on_change(name, rx.cond(checked, "true", "false")),
        size="3",
    )


def _field(
    field: rx.Var,
    values: rx.Var,
    choices: rx.Var,
    errors: rx.Var,
    on_change: OnChange,
) -> rx.Component:
    name = field["name"].to(str)
    value = values.get(name, "").to(str)
    return rx.flex(
        rx.text(
            field["label"].to(str),
            as_="label",
            size="2",
            weight="medium",
            html_for="sp-" + name,
        ),
        rx.match(
            field["kind"].to(str),
            ("choice", _select(field, value, choices, on_change)),
            ("bool", _checkbox(field, value, on_change)),
            _number(field, value, on_change),
        ),
        rx.cond(
            field["range"].to(str) != "",
            rx.text(field["range"].to(str), size="1", color="var(--gray-10)"),
        ),
        rx.cond(
            field["help"].to(str) != "",
            rx.text(field["help"].to(str), size="1", color="var(--gray-10)"),
        ),
        _message(errors, name),
        direction="column",
        spacing="1",
        min_width="min(100%, 200px)",
        flex="1",
        class_name="sp-param",
    )


def params_form(
    fields: rx.Var,
    values: rx.Var,
    choices: rx.Var,
    errors: rx.Var,
    on_change: OnChange,
) -> rx.Component:
    """``fields``: list of dicts (name, kind, low, high, step, range, label, help);
    ``values``/``errors``: by parameter name; ``choices``: name -> [{value, label}]."""
    return rx.flex(
        rx.foreach(fields, lambda f: _field(f, values, choices, errors, on_change)),
        spacing="3",
        wrap="wrap",
        width="100%",
        id="sp-params",
    )
