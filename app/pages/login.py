"""Sign-in page. A native form post and plain links, so the server can set an HttpOnly cookie.

The page is compiled once, but which sign-in methods a server offers is its
run-time configuration; so the provider buttons and the password form follow
``SignInMethodsState``, which the backend computes from the settings when the page
hydrates.
"""

from __future__ import annotations

import reflex as rx
from reflex.vars.function import FunctionStringVar
from reflex_components_core.react_router.dom import ReactRouterLink

from app.components.i18n import t
from app.components.layout import language_button
from app.components.native_form import native_form
from app.config import get_settings
from app.services.oauth_providers import enabled_providers
from app.states.pages import LoginState
from app.states.session import SessionState

# Each provider's own button colours (their brand guidelines ask for these).
_BUTTON_STYLE = {
    "google": {"background": "#ffffff", "color": "#1f1f1f", "border": "1px solid #747775"},
    "kakao": {"background": "#FEE500", "color": "rgba(0, 0, 0, 0.85)", "border": "none"},
    "naver": {"background": "#03C75A", "color": "#ffffff", "border": "none"},
    "apple": {"background": "#000000", "color": "#ffffff", "border": "none"},
}


class SignInMethodsState(rx.State):
    """The sign-in methods this server offers, read from its settings at run time."""

    @rx.var
    def providers(self) -> list[str]:
        return [p.id for p in enabled_providers(get_settings())]

    @rx.var
    def local_login(self) -> bool:
        return get_settings().local_login_enabled


def _style(provider: rx.Var, prop: str) -> rx.Var:
    return rx.match(provider, *[(name, s[prop]) for name, s in _BUTTON_STYLE.items()], "inherit")


def _next_input() -> rx.Component:
    return rx.el.input(
        type="hidden",
        name="next",
        value=LoginState.router.url.query_parameters.get("next", "/"),
    )


def _provider_href(provider: rx.Var) -> rx.Var:
    next_path = LoginState.router.url.query_parameters.get("next", "/").to(str)
    encoded = FunctionStringVar.create("encodeURIComponent").call(next_path).to(str)
    return "/auth/login/" + provider.to(str) + "?next=" + encoded


def _provider_button(provider: rx.Var) -> rx.Component:
    # A link that the browser follows itself (reload_document), not a client-side route
    # change, which would never reach the server; and not a form, because the CSP's
    # form-action 'self' blocks a form whose answer redirects to the provider.
    return rx.button(
        ReactRouterLink.create(
            SessionState.tr["oauth.button." + provider.to(str)].to(str),
            to=_provider_href(provider),
            reload_document=True,
            id="oauth-" + provider.to(str),
            class_name="oauth-button",
        ),
        as_child=True,
        size="3",
        width="100%",
        background=_style(provider, "background"),
        color=_style(provider, "color"),
        border=_style(provider, "border"),
        text_decoration="none",
        # The link's ?next= comes from the router state, which arrives with hydration;
        # a tap before that would sign in and land on / instead of the deep link (the
        # OAuth e2e saw it on a loaded machine). Until then the buttons do not react.
        pointer_events=rx.cond(rx.State.is_hydrated, "auto", "none"),
        opacity=rx.cond(rx.State.is_hydrated, "1", "0.6"),
    )


def _password_form() -> rx.Component:
    return native_form(
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
            _next_input(),
            rx.button(t("login.submit"), type="submit", size="3", id="login-submit"),
            direction="column",
            spacing="2",
        ),
        action="/auth/login",
        method="post",
    )


def login_page() -> rx.Component:
    demo_email = get_settings().demo_email
    has_providers = SignInMethodsState.providers.length() > 0
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
                rx.cond(
                    has_providers,
                    rx.flex(
                        rx.foreach(SignInMethodsState.providers, _provider_button),
                        direction="column",
                        spacing="2",
                        width="100%",
                        id="oauth-providers",
                    ),
                ),
                rx.cond(
                    SignInMethodsState.local_login,
                    rx.fragment(
                        rx.cond(
                            has_providers,
                            rx.flex(
                                rx.separator(size="4"),
                                rx.text(
                                    t("oauth.or"),
                                    size="1",
                                    color="var(--gray-10)",
                                    white_space="nowrap",
                                    flex_shrink="0",
                                ),
                                rx.separator(size="4"),
                                align="center",
                                spacing="2",
                            ),
                        ),
                        _password_form(),
                        rx.text(
                            SessionState.tr["login.demo_hint"]
                            .to(str)
                            .replace("{email}", demo_email),
                            size="1",
                            color="var(--gray-10)",
                        ),
                    ),
                    rx.cond(
                        ~has_providers,
                        rx.callout(t("oauth.none_configured"), color_scheme="amber"),
                    ),
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
