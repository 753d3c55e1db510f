"""Settings: signed-in devices, each revocable."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import error_text, page_frame
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


def settings_page() -> rx.Component:
    return page_frame(
        rx.heading(t("settings.title"), size="6"),
        rx.link(t("settings.brokers"), href="/settings/brokers", id="brokers-link"),
        rx.heading(t("settings.sessions"), size="4", margin_top="16px"),
        rx.text(t("settings.sessions_hint"), size="2", color="var(--gray-11)"),
        error_text(SettingsState.error, "settings-error"),
        rx.box(rx.foreach(SettingsState.sessions, _session_row), id="sessions-list"),
    )
