"""Page frame: navigation, unread badge, language switch, the alert toast."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.install import install_button
from app.components.native_form import native_form
from app.states.live import LiveState
from app.states.session import SessionState

UP_COLOR = "#d1242f"  # Korean convention: rising prices are red,
DOWN_COLOR = "#1f5fd1"  # falling prices are blue.


SELECT_STYLE = {
    "height": "40px",
    "width": "100%",
    "padding": "0 8px",
    "border_radius": "6px",
    "border": "1px solid var(--gray-a7)",
    "background": "var(--color-surface)",
    "color": "inherit",
    "font_size": "16px",  # 16px keeps iOS from zooming into the field
}


def price_color(direction: rx.Var) -> rx.Var:
    return rx.match(direction, ("up", UP_COLOR), ("down", DOWN_COLOR), "inherit")


def _nav_link(key: str, href: str) -> rx.Component:
    return rx.link(t(key), href=href, size="3", weight="medium", white_space="nowrap")


def language_button() -> rx.Component:
    return rx.button(
        t("nav.language"),
        on_click=SessionState.toggle_language,
        variant="ghost",
        size="2",
        id="lang-toggle",
    )


def navbar() -> rx.Component:
    return rx.flex(
        rx.link(
            rx.heading(t("app.name"), size="5"),
            href="/",
            underline="none",
            color="inherit",
        ),
        rx.flex(
            _nav_link("nav.watchlist", "/"),
            _nav_link("nav.rules", "/rules"),
            _nav_link("nav.strategies", "/strategies"),
            _nav_link("nav.portfolio", "/portfolio"),
            rx.link(
                rx.flex(
                    t("nav.history"),
                    rx.cond(
                        LiveState.unread > 0,
                        rx.badge(
                            LiveState.unread,
                            color_scheme="red",
                            variant="solid",
                            radius="full",
                            id="unread-badge",
                            aria_label=t("nav.alerts_badge"),
                        ),
                    ),
                    spacing="1",
                    align="center",
                ),
                href="/alerts",
                size="3",
                weight="medium",
                white_space="nowrap",
            ),
            _nav_link("nav.settings", "/settings"),
            rx.cond(SessionState.is_admin, _nav_link("nav.admin", "/admin/users")),
            spacing="4",
            wrap="wrap",
            align="center",
        ),
        rx.spacer(),
        rx.flex(
            install_button(),
            language_button(),
            native_form(
                rx.button(t("nav.sign_out"), type="submit", variant="soft", size="2"),
                action="/auth/logout",
                method="post",
            ),
            spacing="2",
            align="center",
        ),
        spacing="3",
        wrap="wrap",
        align="center",
        padding_y="12px",
        border_bottom="1px solid var(--gray-a5)",
        width="100%",
    )


def alert_toast() -> rx.Component:
    return rx.cond(
        LiveState.toast.contains("id"),
        rx.box(
            rx.callout.root(
                rx.callout.icon(rx.icon("bell-ring")),
                rx.flex(
                    rx.text(t("alert.toast_title"), weight="bold", size="2"),
                    rx.text(LiveState.toast["title"].to(str), size="2", id="toast-text"),
                    direction="column",
                    spacing="1",
                    flex="1",
                ),
                rx.button(
                    t("alert.dismiss"),
                    on_click=LiveState.dismiss_toast,
                    variant="ghost",
                    size="1",
                ),
                color_scheme="amber",
                role="alert",
                id="alert-toast",
                style={"display": "flex", "align_items": "center", "gap": "12px"},
            ),
            position="fixed",
            bottom="16px",
            left="50%",
            transform="translateX(-50%)",
            width="min(520px, calc(100vw - 24px))",
            z_index="1000",
            box_shadow="0 6px 24px rgba(0,0,0,0.18)",
            border_radius="8px",
        ),
    )


def page_frame(*children: rx.Component) -> rx.Component:
    return rx.box(
        rx.box(
            navbar(),
            rx.box(*children, padding_y="16px"),
            max_width="960px",
            margin_x="auto",
            padding_x="12px",
        ),
        alert_toast(),
        width="100%",
        min_height="100vh",
    )


def error_text(value: rx.Var, id_: str) -> rx.Component:
    return rx.cond(
        value != "",
        rx.text(value, color="var(--red-11)", size="2", id=id_, role="alert"),
    )


def notice_text(value: rx.Var, id_: str) -> rx.Component:
    return rx.cond(value != "", rx.text(value, color="var(--green-11)", size="2", id=id_))
