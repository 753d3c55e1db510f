"""Tables of the strategy pages: plain HTML tables that scroll inside their own box.

A table of trades or optimisation results is wider than a phone; the page must not
scroll sideways, so the table's box does (``overflow-x: auto``) and the rest of the
page keeps its width. Numbers are right-aligned in tabular figures.
"""

from __future__ import annotations

from collections.abc import Callable

import reflex as rx

from app.components.i18n import t

TABLE_STYLE = {
    "border_collapse": "collapse",
    "width": "100%",
    "font_size": "13px",
    "white_space": "nowrap",
    "font_variant_numeric": "tabular-nums",
    "& th": {
        "text_align": "left",
        "padding": "6px 8px",
        "border_bottom": "1px solid var(--gray-a6)",
        "color": "var(--gray-11)",
        "font_weight": "500",
    },
    "& td": {"padding": "5px 8px", "border_bottom": "1px solid var(--gray-a3)"},
    "& td.num, & th.num": {"text_align": "right"},
}


def cell(value: rx.Var | str, *, num: bool = False, **props: object) -> rx.Component:
    return rx.el.td(value, class_name="num" if num else "", **props)


def scroll_table(
    id_: str,
    headers: list[tuple[str, bool]],
    rows: rx.Var,
    render: Callable[[rx.Var], rx.Component],
) -> rx.Component:
    """``headers``: (i18n key, numeric?) per column; ``render`` makes one ``<tr>``."""
    return rx.box(
        rx.el.table(
            rx.el.thead(
                rx.el.tr(
                    *[rx.el.th(t(key), class_name="num" if num else "") for key, num in headers]
                )
            ),
            rx.el.tbody(rx.foreach(rows, render)),
            style=TABLE_STYLE,
        ),
        overflow_x="auto",
        width="100%",
        max_width="100%",
        id=id_,
    )
