"""Channels page state (/settings/channels). Addresses are write-only: the add
handlers pass the form's value straight to the service and keep only masked rows."""

from __future__ import annotations

import html

import reflex as rx

from app import db
from app.config import get_settings
from app.runtime.notifier_setup import build_notifiers
from app.runtime.runner import current_runner
from app.services import channels as channels_service
from app.services.errors import NotFound, ServiceError, ValidationFailed
from app.states.pages import _error_text
from app.states.session import SessionState
from notifiers.base import Delivered, Message

ADDERS = {
    "discord": channels_service.add_discord,
    "telegram": channels_service.add_telegram_chat,
}


class ChannelsState(rx.State):
    rows: list[dict[str, str]] = []
    field_errors: dict[str, str] = {}
    notice: str = ""
    error: str = ""
    form_key: int = 0

    async def _caller(self) -> tuple[SessionState, int | None]:
        session = await self.get_state(SessionState)
        user = await session._user()
        return session, None if user is None else user.id

    async def _reload(self, session: SessionState, user_id: int) -> None:
        async with db.session() as s:
            rows = await channels_service.list_channels(s, user_id)
        self.rows = [
            {
                "id": str(r.id),
                "kind": r.kind,
                "kind_text": session._t(f"channels.kind.{r.kind}"),
                "label": r.label,
                "hint": r.hint,
                "state": session._t(
                    "channels.state.gone"
                    if r.gone
                    else "channels.state.on"
                    if r.enabled and r.verified
                    else "channels.state.unverified"
                    if not r.verified
                    else "channels.state.off"
                ),
                "enabled": "1" if r.enabled else "",
                "error": r.last_error,
            }
            for r in rows
        ]

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        await self._reload(session, user_id)
        return None

    @rx.event
    async def add(self, form: dict) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        kind = str(form.get("kind", ""))
        adder = ADDERS.get(kind)
        self.notice = self.error = ""
        if adder is None:
            self.field_errors = {"kind": session._t("error.channel_kind")}
            return None
        try:
            async with db.session() as s:
                await adder(
                    s,
                    user_id,
                    str(form.get("address", "")),
                    str(form.get("label", "")),
                    ip=session._ip(),
                )
        except ValidationFailed as exc:
            self.field_errors = {
                key: _error_text(session, code, params)
                for key, (code, params) in exc.field_errors.items()
            }
            return None
        self.field_errors = {}
        self.form_key += 1
        self.notice = session._t("channels.added")
        await self._reload(session, user_id)
        return None

    @rx.event
    async def toggle(self, channel_id: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        current = next((r for r in self.rows if r["id"] == channel_id), None)
        try:
            async with db.session() as s:
                await channels_service.set_enabled(
                    s,
                    user_id,
                    int(channel_id) if channel_id.isdigit() else 0,
                    not (current and current["enabled"]),
                    ip=session._ip(),
                )
        except NotFound:
            self.error = session._t("error.not_found")
            return None
        await self._reload(session, user_id)
        return None

    @rx.event
    async def test_send(self, channel_id: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        runner = current_runner()
        notifiers = runner.delivery.notifiers if runner else build_notifiers(get_settings())
        text = session._t("channels.test.text")
        message = Message(
            recipient="",
            subject=session._t("channels.test.subject"),
            text=text,
            html=f"<p>{html.escape(text)}</p>",
            idempotency_key="",
        )
        self.notice = self.error = ""
        try:
            async with db.session() as s:
                outcome = await channels_service.test_send(
                    s,
                    user_id,
                    int(channel_id) if channel_id.isdigit() else 0,
                    notifiers,
                    message,
                    ip=session._ip(),
                )
        except NotFound:
            self.error = session._t("error.not_found")
            return None
        if isinstance(outcome, Delivered):
            self.notice = session._t("channels.test.sent")
        else:
            self.error = session._t("channels.test.failed", reason=outcome.reason)
        await self._reload(session, user_id)
        return None

    @rx.event
    async def delete(self, channel_id: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await channels_service.delete(
                    s, user_id, int(channel_id) if channel_id.isdigit() else 0, ip=session._ip()
                )
        except (NotFound, ServiceError):
            self.error = session._t("error.not_found")
            return None
        self.notice = session._t("channels.deleted")
        await self._reload(session, user_id)
        return None
