"""Sign-in page. A native form post, so the server can set an HttpOnly cookie."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import language_button
from app.components.native_form import native_form
from app.config import get_settings
from app.states.pages import LoginState
from app.states.session import SessionState


def login_page() -> rx.Component:
    demo_email = get_settings().demo_email
    return rx.center(
        rx.card(
            rx.flex(
                rx.flex(
                    rx.heading(t("app.name"), size="6"),
                    rx.spacer(),
                    language_button(),
                    align="center",
                    width="100%",
                ),
                rx.text(t("app.tagline"), color="var(--gray-11)", size="2"),
                rx.heading(t("login.title"), size="4", margin_top="8px"),
                rx.cond(
                    LoginState.error_key != "",
                    rx.callout(
                        SessionState.tr[LoginState.error_key].to(str),
                        color_scheme="red",
                        role="alert",
                        id="login-error",
                    ),
                ),
                rx.cond(
                    LoginState.signed_out,
                    rx.callout(t("login.signed_out"), color_scheme="green"),
                ),
                native_form(
                    rx.flex(
                        rx.text(t("login.email"), as_="label", html_for="email", size="2"),
                        rx.input(
                            id="email",
                            name="email",
                            type="email",
                            auto_complete="username",
                            required=True,
                            size="3",
                        ),
                        rx.text(t("login.password"), as_="label", html_for="password", size="2"),
                        rx.input(
                            id="password",
                            name="password",
                            type="password",
                            auto_complete="current-password",
                            required=True,
                            size="3",
                        ),
                        rx.el.input(
                            type="hidden",
                            name="next",
                            value=LoginState.router.url.query_parameters.get("next", "/"),
                        ),
                        rx.button(t("login.submit"), type="submit", size="3", id="login-submit"),
                        direction="column",
                        spacing="2",
                    ),
                    action="/auth/login",
                    method="post",
                ),
                rx.text(
                    SessionState.tr["login.demo_hint"].to(str).replace("{email}", demo_email),
                    size="1",
                    color="var(--gray-10)",
                ),
                direction="column",
                spacing="3",
            ),
            width="min(420px, calc(100vw - 24px))",
            size="3",
        ),
        min_height="100vh",
        padding="12px",
    )
