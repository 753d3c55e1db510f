"""Notification channels (/settings/channels): the user's channels first (switch on and
off, test, resend a verification link, delete), then one section per way to add one:
an extra e-mail address, Telegram (link by code, or a chat id with an optional own
bot), Discord, KakaoTalk and this browser's push notifications.

Everything wraps (``flex-wrap`` and ``min(100%, …)`` widths), so the page works on a
390 px phone as well as on a desktop.
"""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.kakao_connect import kakao_connect_button
from app.components.layout import error_text, notice_text, page_frame
from app.states.channels import ChannelsState

GRAY = "var(--gray-10)"


def _field_error(key: str, id_: str) -> rx.Component:
    return error_text(ChannelsState.field_errors.get(key, "").to(str), id_)


def _input(name: str, id_: str, placeholder: rx.Var, **props: object) -> rx.Component:
    return rx.input(
        name=name,
        id=id_,
        placeholder=placeholder,
        size="3",
        flex="1",
        min_width="min(100%, 220px)",
        **props,
    )


def _label_input(id_: str) -> rx.Component:
    return rx.input(
        name="label",
        id=id_,
        placeholder=t("channels.label_placeholder"),
        max_length=60,
        size="3",
        flex="1",
        min_width="min(100%, 160px)",
    )


def _section(title_key: str, id_: str, *children: rx.Component) -> rx.Component:
    return rx.box(
        rx.heading(t(title_key), size="4", margin_bottom="6px"),
        *children,
        id=id_,
        width="100%",
        padding="12px",
        margin_y="12px",
        border="1px solid var(--gray-a5)",
        border_radius="8px",
    )


def _row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.flex(
            rx.text(
                row["kind_text"],
                rx.cond(row["label"] != "", " · " + row["label"].to(str), ""),
                weight="bold",
                size="2",
            ),
            rx.text(row["hint"], size="1", color=GRAY, word_break="break-all"),
            rx.cond(row["error"] != "", rx.text(row["error"], size="1", color="var(--red-11)")),
            direction="column",
            min_width="min(100%, 180px)",
            flex="1",
        ),
        rx.badge(row["state"], variant="soft"),
        rx.flex(
            rx.button(
                rx.cond(row["enabled"] != "", t("channels.turn_off"), t("channels.turn_on")),
                on_click=ChannelsState.toggle(row["id"]),
                size="1",
                variant="soft",
                id="ch-toggle-" + row["id"].to(str),
            ),
            rx.cond(
                row["pending_email"] != "",
                rx.button(
                    t("channels.email.resend"),
                    on_click=ChannelsState.resend_verification(row["id"]),
                    size="1",
                    variant="soft",
                    color_scheme="amber",
                    id="ch-resend-" + row["id"].to(str),
                ),
                rx.button(
                    t("channels.test"),
                    on_click=ChannelsState.test_send(row["id"]),
                    size="1",
                    variant="soft",
                    color_scheme="gray",
                    id="ch-test-" + row["id"].to(str),
                ),
            ),
            rx.button(
                t("channels.delete"),
                on_click=ChannelsState.delete(row["id"]),
                size="1",
                variant="soft",
                color_scheme="red",
                id="ch-delete-" + row["id"].to(str),
            ),
            gap="8px",
            wrap="wrap",
        ),
        align="center",
        gap="8px",
        wrap="wrap",
        padding="10px 0",
        border_bottom="1px solid var(--gray-a4)",
        class_name="ch-row",
    )


def _email_section() -> rx.Component:
    return _section(
        "channels.section.email",
        "ch-email",
        rx.text(t("channels.email.help"), size="2", color=GRAY, margin_bottom="8px"),
        rx.form(
            rx.flex(
                _input(
                    "address",
                    "ch-email-address",
                    t("channels.email.placeholder"),
                    input_mode="email",
                    auto_complete="email",
                    auto_capitalize="none",
                    spell_check=False,
                ),
                _label_input("ch-email-label"),
                rx.button(t("channels.email.add"), type="submit", size="3", id="ch-email-add"),
                gap="8px",
                wrap="wrap",
                width="100%",
            ),
            _field_error("email.address", "ch-email-error-address"),
            _field_error("email.label", "ch-email-error-label"),
            on_submit=ChannelsState.add_email,
            key=ChannelsState.form_key,
            width="100%",
        ),
    )


def _telegram_link() -> rx.Component:
    """The code, the deep link and the Check button while a link is in progress."""
    return rx.flex(
        rx.flex(
            rx.link(
                rx.button(
                    rx.icon("send", size=16), t("channels.telegram.open"), size="3", type="button"
                ),
                href=ChannelsState.link_url,
                is_external=True,
                id="ch-tg-open",
            ),
            rx.button(
                t("channels.telegram.check"),
                on_click=ChannelsState.check_link,
                size="3",
                variant="soft",
                id="ch-tg-check",
            ),
            rx.button(
                t("channels.telegram.cancel"),
                on_click=ChannelsState.cancel_link,
                size="3",
                variant="ghost",
                color_scheme="gray",
                id="ch-tg-cancel",
            ),
            gap="8px",
            wrap="wrap",
            align="center",
        ),
        rx.text(ChannelsState.link_send_text, size="2"),
        rx.code("/start ", ChannelsState.link_code, size="5", id="ch-tg-code", width="fit-content"),
        rx.text(ChannelsState.link_expires_text, size="1", color=GRAY),
        rx.cond(
            ChannelsState.link_status != "",
            rx.text(
                ChannelsState.link_status,
                size="2",
                color="var(--amber-11)",
                id="ch-tg-status",
                role="status",
            ),
        ),
        direction="column",
        gap="8px",
    )


def _telegram_section() -> rx.Component:
    return _section(
        "channels.section.telegram",
        "ch-telegram",
        rx.text(t("channels.telegram.help"), size="2", color=GRAY, margin_bottom="8px"),
        rx.cond(
            ChannelsState.link_code != "",
            _telegram_link(),
            rx.button(
                rx.icon("send", size=16),
                t("channels.telegram.link"),
                on_click=ChannelsState.start_link,
                size="3",
                id="ch-tg-link",
            ),
        ),
        _field_error("link.telegram", "ch-tg-link-error"),
        rx.text(t("channels.telegram.manual"), weight="medium", size="2", margin_top="16px"),
        rx.form(
            rx.el.input(type="hidden", name="kind", value="telegram"),
            rx.flex(
                _input(
                    "address",
                    "ch-tg-chat",
                    t("channels.telegram.chat_placeholder"),
                    auto_complete="off",
                ),
                _input(
                    "bot_token",
                    "ch-tg-token",
                    t("channels.telegram.token_placeholder"),
                    type="password",
                    auto_complete="off",
                ),
                _label_input("ch-tg-label"),
                rx.button(t("channels.add"), type="submit", size="3", id="ch-tg-add"),
                gap="8px",
                wrap="wrap",
                width="100%",
                margin_top="6px",
            ),
            rx.text(t("channels.telegram.token_help"), size="1", color=GRAY, margin_top="4px"),
            _field_error("telegram.address", "ch-tg-error-address"),
            _field_error("telegram.bot_token", "ch-tg-error-token"),
            _field_error("telegram.label", "ch-tg-error-label"),
            on_submit=ChannelsState.add,
            key=ChannelsState.form_key,
            width="100%",
        ),
    )


def _discord_section() -> rx.Component:
    return _section(
        "channels.section.discord",
        "ch-discord",
        rx.form(
            rx.el.input(type="hidden", name="kind", value="discord"),
            rx.flex(
                _input(
                    "address",
                    "ch-address",
                    t("channels.discord.placeholder"),
                    type="password",
                    auto_complete="off",
                ),
                _label_input("ch-label"),
                rx.button(t("channels.add"), type="submit", size="3", id="ch-add"),
                gap="8px",
                wrap="wrap",
                width="100%",
            ),
            _field_error("discord.address", "ch-error-address"),
            _field_error("discord.label", "ch-error-label"),
            _field_error("discord.kind", "ch-error-kind"),
            on_submit=ChannelsState.add,
            key=ChannelsState.form_key,
            width="100%",
        ),
    )


def channels_page() -> rx.Component:
    return page_frame(
        rx.heading(t("channels.title"), size="6"),
        rx.text(t("channels.help"), size="2", color=GRAY),
        rx.box(
            error_text(ChannelsState.error, "ch-error"),
            notice_text(ChannelsState.notice, "ch-notice"),
            margin_top="8px",
        ),
        rx.box(
            rx.cond(
                ChannelsState.rows.length() > 0,
                rx.foreach(ChannelsState.rows, _row),
                rx.text(t("channels.empty"), size="2", color=GRAY),
            ),
            id="ch-list",
            margin_top="8px",
        ),
        _email_section(),
        _telegram_section(),
        _discord_section(),
        _section("channels.section.kakao", "ch-kakao", kakao_connect_button()),
        _section(
            "channels.section.push",
            "ch-push-section",
            rx.button(
                rx.icon("bell-ring", size=14),
                t("channels.push_this_browser"),
                # pwa.js handles the click: subscribing needs the service worker, and the
                # CSP allows no inline or eval'd script.
                variant="soft",
                id="ch-push",
                type="button",
            ),
        ),
    )
