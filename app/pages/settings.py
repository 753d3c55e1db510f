"""Settings: signed-in devices (each revocable), linked sign-ins, the daily summary e-mail."""

from __future__ import annotations

import reflex as rx
from reflex_components_core.react_router.dom import ReactRouterLink

from app.components.i18n import t
from app.components.layout import error_text, notice_text, page_frame
from app.states.session import SessionState
from app.states.settings import SettingsState


def _session_row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.flex(
            rx.text(
                row["agent"],
                size="2",
                weight="medium",
                style={"overflow_wrap": "anywhere"},
            ),
            rx.text(
                row["ip"],
                " · ",
                SessionState.tr["settings.created"].to(str).replace("{when}", row["created"]),
                " · ",
                SessionState.tr["settings.last_used"].to(str).replace("{when}", row["last_used"]),
                size="1",
                color="var(--gray-10)",
            ),
            direction="column",
            flex="1",
            min_width="0",
        ),
        rx.cond(
            row["current"] != "",
            rx.badge(t("settings.current"), color_scheme="green"),
        ),
        rx.button(
            t("settings.revoke"),
            on_click=SettingsState.revoke(row["id"]),
            variant="soft",
            color_scheme="red",
            size="1",
        ),
        align="center",
        spacing="3",
        padding="12px",
        border_bottom="1px solid var(--gray-a4)",
        class_name="session-row",
    )


def _identity_row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.text(
            SessionState.tr["oauth.provider." + row["provider"].to(str)].to(str), weight="bold"
        ),
        rx.text(row["email"], " · ", row["since"], size="1", color="var(--gray-10)"),
        spacing="3",
        align="center",
        wrap="wrap",
        padding="8px 12px",
        border_bottom="1px solid var(--gray-a4)",
        class_name="identity-row",
    )


def _link_button(provider: rx.Var) -> rx.Component:
    # The browser must follow it itself (reload_document): the flow is server-side.
    return rx.button(
        ReactRouterLink.create(
            SessionState.tr["oauth.link"]
            .to(str)
            .replace("{provider}", SessionState.tr["oauth.provider." + provider.to(str)].to(str)),
            to="/auth/link/" + provider.to(str) + "?next=/settings",
            reload_document=True,
            id="link-" + provider.to(str),
        ),
        as_child=True,
        variant="soft",
        size="2",
    )


def _digest_switch() -> rx.Component:
    """Disabled, with the reason, when the server cannot send e-mail (no SMTP): the job
    is not even scheduled then, so a switch that seems to work would be a lie."""
    return rx.box(
        rx.heading(t("daily.setting.title"), size="4", margin_top="24px"),
        rx.flex(
            rx.switch(
                checked=SettingsState.daily_digest,
                on_change=SettingsState.set_daily_digest,
                disabled=~SettingsState.digest_available,
                id="daily-digest-switch",
            ),
            rx.text(
                SessionState.tr["daily.setting.hint"]
                .to(str)
                .replace("{time}", SettingsState.digest_time),
                size="2",
                color="var(--gray-11)",
            ),
            align="center",
            spacing="3",
            margin_top="8px",
        ),
        rx.cond(
            SettingsState.digest_available,
            rx.fragment(),
            rx.text(
                t("daily.setting.unavailable"),
                size="2",
                color="var(--amber-11)",
                id="daily-digest-unavailable",
            ),
        ),
        notice_text(SettingsState.digest_notice, "daily-digest-notice"),
        id="daily-digest",
    )


def settings_page() -> rx.Component:
    return page_frame(
        rx.heading(t("settings.title"), size="6"),
        rx.flex(
            rx.link(t("settings.brokers"), href="/settings/brokers", id="brokers-link"),
            rx.link(t("nav.channels"), href="/settings/channels", id="channels-link"),
            gap="16px",
            wrap="wrap",
        ),
        rx.heading(t("settings.sessions"), size="4", margin_top="16px"),
        rx.text(t("settings.sessions_hint"), size="2", color="var(--gray-11)"),
        error_text(SettingsState.error, "settings-error"),
        rx.box(rx.foreach(SettingsState.sessions, _session_row), id="sessions-list"),
        rx.heading(t("oauth.linked"), size="4", margin_top="24px"),
        rx.box(rx.foreach(SettingsState.identities, _identity_row), id="identities-list"),
        rx.flex(
            rx.foreach(SettingsState.linkable, _link_button),
            spacing="2",
            wrap="wrap",
            margin_top="8px",
        ),
        _digest_switch(),
    )
