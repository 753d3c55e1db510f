"""Broker accounts page state: write-only secrets.

The create handler receives the form's values as its argument, hands them to the
credential service and lets them go. No secret is ever assigned to a state var,
not even a backend-only ``_`` var: Reflex pickles state to disk or Redis, and
this page's whole point is that a stored secret is never readable again. Only
the masked rows the service returns are kept.
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

import reflex as rx

from app import db
from app.services import credentials as credentials_service
from app.services.errors import ServiceError, ValidationFailed
from app.states.pages import _error_text
from app.states.session import SessionState
from app.vault_keys import VaultError

KST = ZoneInfo("Asia/Seoul")
log = logging.getLogger(__name__)


class BrokersState(rx.State):
    rows: list[dict[str, str]] = []
    field_errors: dict[str, str] = {}
    notice: str = ""
    error: str = ""
    form_key: int = 0  # bumped after a save: the form remounts, so its inputs are emptied

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        async with db.session() as s:
            rows = await credentials_service.list_accounts(s, user.id)
        self.rows = [
            {
                "id": str(r.id),
                "label": r.label,
                "mode": "paper" if r.is_paper else "real",
                "mode_text": session._t("brokers.mode.paper")
                if r.is_paper
                else session._t("brokers.mode.real"),
                "account": f"{r.masked_account}-{r.product_code}",
                "created": r.created_at.astimezone(KST).strftime("%Y-%m-%d"),
            }
            for r in rows
        ]
        return None

    @rx.event
    async def create(self, form: dict) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            form.clear()
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await credentials_service.create_kis_account(
                    s,
                    user.id,
                    label=str(form.get("label", "")),
                    app_key=str(form.get("app_key", "")),
                    app_secret=str(form.get("app_secret", "")),
                    account_no=str(form.get("account_no", "")),
                    product_code=str(form.get("product_code", "") or "01"),
                    hts_id=str(form.get("hts_id", "")),
                    is_paper=str(form.get("mode", "paper")) != "real",
                    ip=session._ip(),
                )
        except ValidationFailed as exc:
            self.field_errors = {
                field: _error_text(session, code, params)
                for field, (code, params) in exc.field_errors.items()
            }
            self.notice = ""
            self.error = ""
            return None
        except VaultError as exc:
            # The operator needs the reason (it names key ids, never a value); the
            # user gets a sentence to act on.
            log.error("broker account not saved: %s", exc)
            self.error = session._t("vault.unavailable")
            self.notice = ""
            return None
        finally:
            form.clear()  # drop the only reference this handler had to the secrets
        self.field_errors = {}
        self.error = ""
        self.notice = session._t("brokers.saved")
        self.form_key += 1
        return BrokersState.load

    @rx.event
    async def test_connection(self, credential_id: str) -> rx.event.EventSpec | None:
        """Checks the stored key pair with KIS; the plaintext never enters this state."""
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                result = await credentials_service.check_kis_connection(
                    s, user.id, int(credential_id), ip=session._ip()
                )
        except (ServiceError, ValueError) as exc:
            code = exc.code if isinstance(exc, ServiceError) else "not_found"
            self.error = _error_text(session, code, {})
            self.notice = ""
            return None
        if result == "ok":
            self.notice, self.error = session._t("brokers.test_ok"), ""
        else:
            self.notice, self.error = "", session._t(f"brokers.test_{result}")
        return None

    @rx.event
    async def delete(self, credential_id: str) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await credentials_service.delete_kis_account(
                    s, user.id, int(credential_id), ip=session._ip()
                )
        except (ServiceError, ValueError):
            self.error = _error_text(session, "not_found", {})
            self.notice = ""
            return BrokersState.load
        self.error = ""
        self.notice = session._t("brokers.deleted")
        return BrokersState.load
