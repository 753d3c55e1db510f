"""Channels page state (/settings/channels). Addresses are write-only: the add
handlers pass the form's values straight to the services and keep only masked rows.

No secret is ever a var here: a bot token or a webhook URL goes from the submitted
form dict to the service and is gone when the handler returns. The Telegram linking
code is shown to the user, so it is a var; it is short-lived, single-use, worthless
to anyone but the user it was issued to (it is looked up among that user's own
pending links only), and cleared once the chat is linked.
"""

from __future__ import annotations

import html
import logging

import reflex as rx

from app import db
from app.config import get_settings
from app.i18n import catalog
from app.models.channels import CHANNEL_EXTRA_EMAIL
from app.runtime.notifier_setup import build_notifiers
from app.runtime.runner import current_runner
from app.services import channel_links
from app.services import channels as channels_service
from app.services.errors import NotFound, ServiceError, ValidationFailed
from app.states.pages import _error_text
from app.states.session import SessionState
from notifiers.base import Delivered, Message, Notifier

log = logging.getLogger(__name__)

FORM_KINDS = ("discord", "telegram")
_LINK_RESTART = {"channel_telegram_link_unknown", "channel_telegram_link_expired"}


def _notifiers() -> dict[str, Notifier]:
    """The running server's notifiers, or ones built from the settings (no runner)."""
    runner = current_runner()
    return dict(runner.delivery.notifiers) if runner else build_notifiers(get_settings())


def query_notice(lang: str, params: dict[str, str]) -> tuple[str, str]:
    """(notice, error) for ``?verified=``, ``?linked=`` and ``?error=`` on the page.

    The query string is the visitor's to edit, so only catalog texts are ever shown:
    an unknown code gets the generic message, never the code itself.
    """
    texts = catalog(lang)
    code = str(params.get("error", "") or "")[:64]
    if code:
        for key in (f"channels.link_error.{code}", f"error.{code}"):
            # error.<code> texts from other flows (Kakao's) are shown only when they need
            # no parameters: a bare "{limit}" must never reach the page.
            if key in texts and "{" not in texts[key]:
                return "", texts[key]
        return "", texts["channels.link_error_generic"]
    if params.get("verified", "") == "email":
        return texts["channels.verified.email"], ""
    linked = str(params.get("linked", "") or "")[:32]
    if linked:
        for key in (f"channels.linked.{linked}", f"{linked}_link.linked"):
            if key in texts:
                return texts[key], ""
        kind = f"channels.kind.{linked}"
        if kind in texts:
            return texts["channels.linked"].format(name=texts[kind]), ""
        return texts["channels.linked_generic"], ""
    return "", ""


class ChannelsState(rx.State):
    rows: list[dict[str, str]] = []
    # "<form>.<field>" -> message; forms: discord, telegram, email, link
    field_errors: dict[str, str] = {}
    notice: str = ""
    error: str = ""
    form_key: int = 0
    # The Telegram link in progress (see the module docstring).
    link_code: str = ""
    link_url: str = ""
    link_send_text: str = ""
    link_expires_text: str = ""
    link_status: str = ""

    async def _caller(self) -> tuple[SessionState, int | None]:
        session = await self.get_state(SessionState)
        user = await session._user()
        return session, None if user is None else user.id

    def _show_errors(self, session: SessionState, form: str, exc: ValidationFailed) -> None:
        self.field_errors = {
            f"{form}.{key}": _error_text(session, code, params)
            for key, (code, params) in exc.field_errors.items()
        }

    def _clear_link(self) -> None:
        self.link_code = self.link_url = self.link_send_text = ""
        self.link_expires_text = self.link_status = ""

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
                # An extra address is verified by its link only; a test proves nothing.
                "pending_email": "1"
                if r.kind == CHANNEL_EXTRA_EMAIL and not r.verified and not r.gone
                else "",
            }
            for r in rows
        ]

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        self.field_errors = {}
        self.notice, self.error = query_notice(
            session.ui_lang, dict(self.router.url.query_parameters)
        )
        await self._reload(session, user_id)
        return None

    @rx.event
    async def add(self, form: dict) -> rx.event.EventSpec | None:
        """Discord webhook, or a Telegram chat id (optionally on the user's own bot)."""
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        kind = str(form.get("kind", ""))
        self.notice = self.error = ""
        if kind not in FORM_KINDS:
            self.field_errors = {"discord.kind": session._t("error.channel_kind")}
            return None
        address = str(form.get("address", ""))
        label = str(form.get("label", ""))
        # Straight from the form to the service: never a var, never logged.
        bot_token = str(form.get("bot_token", "") or "").strip() if kind == "telegram" else ""
        try:
            async with db.session() as s:
                if kind == "discord":
                    row = await channels_service.add_discord(
                        s, user_id, address, label, ip=session._ip()
                    )
                elif bot_token:
                    row = await channel_links.add_telegram_own_bot(
                        s, user_id, address, bot_token, label, ip=session._ip()
                    )
                else:
                    row = await channels_service.add_telegram_chat(
                        s, user_id, address, label, ip=session._ip()
                    )
        except ValidationFailed as exc:
            self._show_errors(session, kind, exc)
            return None
        self.field_errors = {}
        self.form_key += 1
        self.notice = session._t("channels.added" if row.verified else "channels.added_unverified")
        await self._reload(session, user_id)
        return None

    @rx.event
    async def add_email(self, form: dict) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        self.notice = self.error = ""
        try:
            async with db.session() as s:
                row = await channel_links.add_email(
                    s,
                    user_id,
                    str(form.get("address", "")),
                    str(form.get("label", "")),
                    mailer=_notifiers().get("email"),
                    ip=session._ip(),
                )
        except ValidationFailed as exc:
            self._show_errors(session, "email", exc)
            return None
        self.field_errors = {}
        self.form_key += 1
        self.notice = session._t(
            "channels.email.sent", hint=row.hint, hours=get_settings().channel_verify_ttl_hours
        )
        await self._reload(session, user_id)
        return None

    @rx.event
    async def resend_verification(self, channel_id: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        self.notice = self.error = ""
        try:
            async with db.session() as s:
                await channel_links.resend_email_verification(
                    s,
                    user_id,
                    int(channel_id) if channel_id.isdigit() else 0,
                    mailer=_notifiers().get("email"),
                    ip=session._ip(),
                )
        except NotFound:
            self.error = session._t("error.not_found")
            return None
        except ValidationFailed as exc:
            code, params = next(iter(exc.field_errors.values()))
            self.error = _error_text(session, code, params)
            return None
        self.notice = session._t("channels.email.resent")
        await self._reload(session, user_id)
        return None

    @rx.event
    async def start_link(self) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        self.notice = self.error = ""
        self.field_errors = {}
        self._clear_link()
        try:
            async with db.session() as s:
                link = await channel_links.start_telegram_link(s, user_id)
        except ValidationFailed as exc:
            self._show_errors(session, "link", exc)
            return None
        self.link_code = link.code
        self.link_url = link.deep_link
        self.link_send_text = session._t("channels.telegram.or_send", bot=link.bot_username)
        self.link_expires_text = session._t(
            "channels.telegram.expires", minutes=get_settings().telegram_link_ttl_minutes
        )
        return None

    @rx.event
    async def check_link(self) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        self.notice = self.error = ""
        self.field_errors = {}
        try:
            async with db.session() as s:
                row = await channel_links.check_telegram_link(
                    s, user_id, self.link_code, ip=session._ip()
                )
        except ValidationFailed as exc:
            self._show_errors(session, "link", exc)
            code = next(iter(exc.field_errors.values()))[0]
            if code in _LINK_RESTART:
                self._clear_link()
            else:
                self.link_status = ""
            return None
        if row is None:
            self.link_status = session._t("channels.telegram.waiting")
            return None
        self._clear_link()
        self.notice = session._t("channels.telegram.linked")
        await self._reload(session, user_id)
        return None

    @rx.event
    async def cancel_link(self) -> None:
        """Forgets the code on this page; the pending row dies with its time limit."""
        self._clear_link()
        self.field_errors = {}

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
                    _notifiers(),
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
