"""Admin pages: users, audit log, system status."""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t
from app.components.layout import error_text, page_frame
from app.states.admin import AdminState

STATUS_KEYS = (
    "users",
    "active_sessions",
    "active_rules",
    "events_today",
    "deliveries_pending",
    "deliveries_dead",
    "runner",
    "subscribed",
    "ticks_seen",
    "upstream_sessions",
    "symbols_waiting",
    "paper_accounts_open",
    "leadership",
    "fencing_token",
    "broker_sessions",
    "events_recorded",
    "outbox_lag",
    "attachments_running",
    "attachments_error",
    "attachments_reconciling",
    "backtests_queued",
    "backtests_running",
)


def admin_tabs() -> rx.Component:
    return rx.flex(
        rx.link(t("admin.users"), href="/admin/users"),
        rx.link(t("admin.audit"), href="/admin/audit"),
        rx.link(t("admin.status"), href="/admin/status"),
        spacing="4",
        wrap="wrap",
        margin_bottom="12px",
    )


def _user_row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.flex(
            rx.text(row["email"], weight="bold", style={"overflow_wrap": "anywhere"}),
            rx.text(row["name"], " · #", row["id"], " · ", row["created"], size="1"),
            direction="column",
            flex="1",
            min_width="0",
        ),
        rx.badge(row["role"], color_scheme=rx.cond(row["role"] == "admin", "purple", "gray")),
        rx.cond(row["active"] == "", rx.badge(t("admin.disabled"), color_scheme="red")),
        rx.cond(
            row["self"] != "",
            rx.badge(t("admin.you")),
            rx.flex(
                rx.cond(
                    row["role"] == "admin",
                    rx.button(
                        t("admin.make_user"),
                        on_click=AdminState.set_role(row["id"], "user"),
                        size="1",
                        variant="soft",
                    ),
                    rx.button(
                        t("admin.make_admin"),
                        on_click=AdminState.set_role(row["id"], "admin"),
                        size="1",
                        variant="soft",
                    ),
                ),
                rx.cond(
                    row["active"] != "",
                    rx.button(
                        t("admin.disable"),
                        on_click=AdminState.set_active(row["id"], False),
                        size="1",
                        variant="soft",
                        color_scheme="red",
                    ),
                    rx.button(
                        t("admin.enable"),
                        on_click=AdminState.set_active(row["id"], True),
                        size="1",
                        variant="soft",
                        color_scheme="green",
                    ),
                ),
                spacing="2",
            ),
        ),
        align="center",
        spacing="3",
        wrap="wrap",
        padding="12px",
        border_bottom="1px solid var(--gray-a4)",
        class_name="admin-user-row",
    )


def admin_users_page() -> rx.Component:
    return page_frame(
        rx.heading(t("admin.users"), size="6"),
        admin_tabs(),
        error_text(AdminState.error, "admin-error"),
        rx.box(rx.foreach(AdminState.users, _user_row), id="admin-users"),
    )


_SELECT = {
    "height": "32px",
    "border_radius": "6px",
    "border": "1px solid var(--gray-a7)",
    "background": "var(--color-surface)",
    "color": "inherit",
}


def _audit_row(row: rx.Var) -> rx.Component:
    return rx.flex(
        rx.text(row["at"], size="1", color="var(--gray-10)", min_width="150px"),
        rx.text(row["action"], size="2", weight="medium", min_width="180px"),
        rx.text(row["target"], size="2", min_width="120px"),
        rx.badge(
            row["outcome"],
            color_scheme=rx.match(row["outcome"], ("ok", "green"), ("denied", "red"), "amber"),
        ),
        rx.text("#", row["actor"], " ", row["ip"], size="1", color="var(--gray-10)"),
        spacing="3",
        wrap="wrap",
        align="center",
        padding="8px",
        border_bottom="1px solid var(--gray-a4)",
        class_name="audit-row",
    )


def admin_audit_page() -> rx.Component:
    return page_frame(
        rx.heading(t("admin.audit"), size="6"),
        admin_tabs(),
        rx.form(
            rx.flex(
                rx.input(name="action", placeholder=t("admin.filter.action"), size="2"),
                rx.el.select(
                    rx.el.option(t("admin.filter.any"), value=""),
                    rx.el.option("ok", value="ok"),
                    rx.el.option("denied", value="denied"),
                    rx.el.option("failed", value="failed"),
                    name="outcome",
                    aria_label=t("admin.filter.outcome"),
                    style=_SELECT,
                ),
                rx.input(
                    name="actor", placeholder=t("admin.filter.actor"), size="2", width="110px"
                ),
                rx.input(
                    name="days",
                    placeholder=t("admin.filter.days"),
                    default_value="7",
                    size="2",
                    width="90px",
                ),
                rx.button(t("admin.filter.apply"), type="submit", size="2"),
                spacing="2",
                wrap="wrap",
            ),
            on_submit=AdminState.filter_audit,
        ),
        error_text(AdminState.error, "admin-error"),
        rx.box(
            rx.cond(
                AdminState.entries.length() > 0,
                rx.foreach(AdminState.entries, _audit_row),
                rx.text(t("admin.audit_empty"), color="var(--gray-10)", padding="12px"),
            ),
            margin_top="12px",
            id="audit-list",
        ),
    )


def admin_status_page() -> rx.Component:
    return page_frame(
        rx.heading(t("admin.status"), size="6"),
        admin_tabs(),
        error_text(AdminState.error, "admin-error"),
        rx.grid(
            *[
                rx.card(
                    rx.text(t(f"admin.status.{key}"), size="1", color="var(--gray-11)"),
                    rx.text(AdminState.status.get(key, "—").to(str), size="5", weight="bold"),
                )
                for key in STATUS_KEYS
            ],
            columns=rx.breakpoints(initial="2", sm="3"),
            spacing="3",
            id="status-grid",
        ),
        _failures_table(),
    )


def _failure_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(row["channel"]),
        rx.table.cell(row["last_hour"]),
        rx.table.cell(row["total"]),
        class_name="failure-row",
    )


def _failures_table() -> rx.Component:
    """Failed send attempts per channel kind: the same figures /metrics exports."""
    return rx.box(
        rx.heading(t("admin.status.failures"), size="4", margin_top="16px"),
        rx.cond(
            AdminState.failures.length() > 0,
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell(t("admin.status.failures_channel")),
                        rx.table.column_header_cell(t("admin.status.failures_hour")),
                        rx.table.column_header_cell(t("admin.status.failures_total")),
                    )
                ),
                rx.table.body(rx.foreach(AdminState.failures, _failure_row)),
            ),
            rx.text(t("admin.status.failures_none"), color="var(--gray-10)", padding="12px"),
        ),
        id="status-failures",
    )
