"""The portfolio page: account picker, summary, holdings, and the paper order ticket."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import SELECT_STYLE, error_text, notice_text, page_frame, price_color
from app.states.portfolio import PortfolioState


def _stat(label_key: str, key: str, dir_key: str | None = None) -> rx.Component:
    value = PortfolioState.summary[key].to(str)
    return rx.box(
        rx.text(t(label_key), size="1", color="var(--gray-10)"),
        rx.text(
            value,
            size="4",
            weight="bold",
            id=f"pf-{key}",
            font_variant_numeric="tabular-nums",
            color=price_color(PortfolioState.summary[dir_key].to(str)) if dir_key else "inherit",
        ),
        padding="10px",
        border="1px solid var(--gray-a5)",
        border_radius="8px",
        min_width="0",
    )


def _holding(row: rx.Var) -> rx.Component:
    color = price_color(row["dir"])
    return rx.flex(
        rx.link(
            rx.flex(
                rx.text(row["name"], weight="bold", size="2"),
                rx.text(
                    row["symbol"],
                    " · ",
                    row["qty"],
                    " × ",
                    row["avg"],
                    size="1",
                    color="var(--gray-10)",
                ),
                direction="column",
                min_width="0",
            ),
            href="/symbol?code=" + row["symbol"].to(str),
            color="inherit",
            underline="none",
            flex="1",
            min_width="0",
        ),
        rx.flex(
            rx.text(row["value"], size="2", weight="bold", font_variant_numeric="tabular-nums"),
            rx.text(
                row["pnl"],
                " (",
                row["pnl_pct"],
                ")",
                size="1",
                color=color,
                font_variant_numeric="tabular-nums",
            ),
            direction="column",
            align="end",
        ),
        align="center",
        gap="8px",
        padding="10px 4px",
        border_bottom="1px solid var(--gray-a4)",
        class_name="pf-row",
        data_symbol=row["symbol"],
    )


def _field_error(key: str) -> rx.Component:
    msg = PortfolioState.field_errors[key].to(str)
    return rx.cond(
        PortfolioState.field_errors.contains(key),
        rx.text(msg, color="var(--red-11)", size="1", id=f"pf-error-{key}", role="alert"),
    )


def _ticket_field(key: str, label_key: str, control: rx.Component) -> rx.Component:
    return rx.box(rx.text(t(label_key), size="1", as_="label"), control, _field_error(key))


def _text_input(key: str, auto_complete: str, *, numeric: bool = False) -> rx.Component:
    return rx.input(
        name=key,
        value=PortfolioState.form[key].to(str),
        on_change=lambda v: PortfolioState.set_order_field(key, v),
        id=f"pf-{key}",
        auto_complete=auto_complete,
        input_mode="numeric" if numeric else "text",
    )


def _choice(key: str, id_: str, *options: tuple[str, str]) -> rx.Component:
    return rx.el.select(
        *(rx.el.option(t(label), value=value) for value, label in options),
        name=key,
        value=PortfolioState.form[key].to(str),
        on_change=lambda v: PortfolioState.set_order_field(key, v),
        id=id_,
        style=SELECT_STYLE,
    )


def _ticket() -> rx.Component:
    return rx.card(
        rx.heading(t("portfolio.ticket"), size="3"),
        rx.text(t("portfolio.ticket.help"), size="1", color="var(--gray-10)"),
        rx.form(
            rx.grid(
                _ticket_field("symbol", "portfolio.symbol", _text_input("symbol", "off")),
                _ticket_field(
                    "side",
                    "portfolio.side",
                    _choice(
                        "side",
                        "pf-side",
                        ("buy", "portfolio.side.buy"),
                        ("sell", "portfolio.side.sell"),
                    ),
                ),
                _ticket_field(
                    "order_type",
                    "portfolio.type",
                    _choice(
                        "order_type",
                        "pf-type",
                        ("limit", "portfolio.type.limit"),
                        ("market", "portfolio.type.market"),
                    ),
                ),
                _ticket_field("qty", "portfolio.qty", _text_input("qty", "off", numeric=True)),
                rx.cond(
                    PortfolioState.form["order_type"].to(str) != "market",
                    _ticket_field(
                        "price", "portfolio.price", _text_input("price", "off", numeric=True)
                    ),
                ),
                columns=rx.breakpoints(initial="2", sm="5"),
                gap="8px",
                width="100%",
            ),
            _field_error("order"),
            rx.button(t("portfolio.place"), type="submit", id="pf-place", margin_top="8px"),
            on_submit=PortfolioState.place,
        ),
        width="100%",
    )


def _order(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.text(row["side"], " ", row["symbol"], " ", row["qty"], " @ ", row["price"], size="2"),
        rx.spacer(),
        rx.badge(row["state"], variant="soft"),
        rx.cond(
            row["open"] != "",
            rx.button(
                t("portfolio.cancel"),
                on_click=PortfolioState.cancel(row["id"]),
                size="1",
                variant="soft",
                color_scheme="red",
                id="pf-cancel-" + row["id"].to(str),
            ),
        ),
        align="center",
        gap="8px",
        padding="6px 0",
        border_bottom="1px solid var(--gray-a3)",
        class_name="pf-order",
        wrap="wrap",
    )


def _fill(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.text(row["time"], size="1", color="var(--gray-10)"),
        rx.text(row["side"], " ", row["symbol"], " ", row["qty"], " @ ", row["price"], size="2"),
        rx.spacer(),
        rx.text(t("portfolio.fees"), " ", row["fees"], size="1", color="var(--gray-10)"),
        gap="8px",
        align="center",
        padding="4px 0",
        wrap="wrap",
        class_name="pf-fill",
    )


def portfolio_page() -> rx.Component:
    return page_frame(
        rx.flex(
            rx.heading(t("portfolio.title"), size="6"),
            rx.spacer(),
            rx.el.select(
                rx.foreach(
                    PortfolioState.sources,
                    lambda s: rx.el.option(s["label"], value=s["key"]),
                ),
                value=PortfolioState.source,
                on_change=PortfolioState.choose_source,
                id="pf-source",
                aria_label=t("portfolio.source"),
                style={**SELECT_STYLE, "width": "auto", "max_width": "100%"},
            ),
            rx.button(
                rx.icon("refresh-cw", size=14),
                t("portfolio.refresh"),
                on_click=PortfolioState.refresh,
                variant="soft",
                id="pf-refresh",
            ),
            align="center",
            gap="8px",
            wrap="wrap",
        ),
        rx.text(t("portfolio.as_of"), " ", PortfolioState.as_of, size="1", color="var(--gray-10)"),
        error_text(PortfolioState.error, "pf-error"),
        notice_text(PortfolioState.notice, "pf-notice"),
        rx.grid(
            _stat("portfolio.total", "total"),
            _stat("portfolio.cash", "cash"),
            _stat("portfolio.holdings", "holdings"),
            _stat("portfolio.unrealized", "unrealized", "unrealized_dir"),
            rx.cond(PortfolioState.is_paper, _stat("portfolio.orderable", "orderable")),
            rx.cond(
                PortfolioState.is_paper,
                _stat("portfolio.realized", "realized", "realized_dir"),
            ),
            rx.cond(
                PortfolioState.is_paper,
                _stat("portfolio.total_pnl", "total_pnl", "total_pnl_dir"),
            ),
            columns=rx.breakpoints(initial="2", sm="4"),
            gap="8px",
            margin_y="12px",
        ),
        rx.box(
            rx.cond(
                PortfolioState.rows.length() > 0,
                rx.foreach(PortfolioState.rows, _holding),
                rx.text(t("portfolio.empty"), color="var(--gray-10)", padding="8px 0"),
            ),
            id="pf-holdings",
        ),
        rx.cond(
            PortfolioState.is_paper,
            rx.flex(
                _ticket(),
                rx.box(
                    rx.heading(t("portfolio.orders"), size="3", margin_bottom="4px"),
                    rx.cond(
                        PortfolioState.orders.length() > 0,
                        rx.foreach(PortfolioState.orders, _order),
                        rx.text(t("portfolio.no_orders"), size="2", color="var(--gray-10)"),
                    ),
                    id="pf-orders",
                ),
                rx.box(
                    rx.heading(t("portfolio.fills"), size="3", margin_bottom="4px"),
                    rx.foreach(PortfolioState.fills, _fill),
                    id="pf-fills",
                ),
                direction="column",
                gap="16px",
                margin_top="16px",
            ),
        ),
        rx.box(on_unmount=PortfolioState.leave),
    )
