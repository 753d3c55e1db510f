"""Strategy attachments: attaching configs to symbols, modes, limits, live, kill switch.

Split from :mod:`app.services.strategies` (which re-exports the public names, and is
what callers import). The shared views, ownership checks and audit helpers come from
:mod:`app.services.strategy_configs`.
"""

from __future__ import annotations

import logging
import unicodedata

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import Settings
from app.i18n import LANGUAGES, translate
from app.models.audit import OUTCOME_FAILED
from app.models.common import utcnow
from app.models.strategies import (
    MODE_ALERT,
    MODE_LIVE,
    MODE_PAPER,
    STATE_RECONCILING,
    STATE_RUNNING,
    StrategyAttachment,
    StrategyOrder,
)
from app.services import audit, changes, credentials, symbols
from app.services.errors import NotFound, ValidationFailed
from app.services.strategy_configs import (
    _NUMBER,
    LIMIT_CAPS,
    LIMIT_FIELDS,
    MAX_ATTACHMENTS,
    AttachmentView,
    FieldErrors,
    StrategyOrderView,
    _attachment_view,
    _audit_attachment,
    _order_view,
    _owned_attachment,
    _owned_config,
    _pk,
    _save_attachment,
    _unresolved,
    _view,
)
from app.services.strategy_orders import cancel_open_orders, lookup_opener

log = logging.getLogger(__name__)


# ---- validation -----------------------------------------------------------------------


def _limit(raw: object, field: str, errors: FieldErrors) -> int | None:
    """A positive whole number within its cap, or None for "no limit" (empty input)."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        errors[field] = ("strategy_limit_not_number", {})
        return None
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip().replace(",", "")
        if not text:
            return None
        if not _NUMBER.fullmatch(text):
            errors[field] = ("strategy_limit_not_number", {})
            return None
        value = int(text)
    if value <= 0:
        errors[field] = ("strategy_limit_not_positive", {})
        return None
    if value > LIMIT_CAPS[field]:
        errors[field] = ("strategy_limit_too_large", {"limit": LIMIT_CAPS[field]})
        return None
    return value


def _normalise_phrase(text: str) -> str:
    """Case, width and spacing do not matter; the words do."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return " ".join(folded.split())


def live_phrases() -> dict[str, str]:
    """The phrase a user types to go live, per language (either is accepted)."""
    return {lang: translate("strategy.live.confirm_phrase", lang) for lang in LANGUAGES}


# ---- attachments ----------------------------------------------------------------------


def _mode(mode: object) -> str:
    text = str(mode or "").strip().lower()
    if text == MODE_LIVE:
        raise ValidationFailed.single("mode", "strategy_live_needs_confirmation")
    if text not in (MODE_ALERT, MODE_PAPER):
        raise ValidationFailed.single("mode", "strategy_bad_mode")
    return text


async def get_attachment(
    session: AsyncSession, user_id: int, attachment_id: int | str, ip: str = ""
) -> AttachmentView:
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    return await _view(session, att)


async def attach(
    session: AsyncSession,
    user_id: int,
    config_id: int | str,
    *,
    symbol: str,
    mode: str = MODE_ALERT,
    ip: str = "",
) -> AttachmentView:
    """Run the config on ``symbol`` in alert or paper mode (live: :func:`go_live`)."""
    config = await _owned_config(session, user_id, config_id, ip)
    mode = _mode(mode)
    sym = await symbols.resolve(session, symbol)
    exists = (
        await session.exec(
            select(StrategyAttachment.id).where(
                StrategyAttachment.config_id == config.id, StrategyAttachment.symbol == sym.code
            )
        )
    ).first()
    if exists is not None:
        raise ValidationFailed.single("symbol", "strategy_already_attached", symbol=sym.code)
    count = (
        await session.exec(
            select(func.count())
            .select_from(StrategyAttachment)
            .where(StrategyAttachment.user_id == user_id)
        )
    ).one()
    if count >= MAX_ATTACHMENTS:
        raise ValidationFailed.single(
            "symbol", "strategy_too_many_attachments", limit=MAX_ATTACHMENTS
        )
    assert config.id is not None
    att = StrategyAttachment(user_id=user_id, config_id=config.id, symbol=sym.code, mode=mode)
    session.add(att)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ValidationFailed.single(
            "symbol", "strategy_already_attached", symbol=sym.code
        ) from None
    await session.refresh(att)
    await _audit_attachment(
        audit.STRATEGY_ATTACHED,
        user_id,
        att,
        ip,
        {"config_id": config.id, "symbol": sym.code, "mode": mode},
    )
    changes.notify()
    return _attachment_view(att, sym)


async def detach(
    session: AsyncSession, user_id: int, attachment_id: int | str, ip: str = ""
) -> None:
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    assert att.id is not None
    if await _unresolved(session, [att.id]):
        raise ValidationFailed.single("attachment", "strategy_orders_unresolved")
    await session.delete(att)
    await session.commit()
    await _audit_attachment(
        audit.STRATEGY_DETACHED,
        user_id,
        att,
        ip,
        {"config_id": att.config_id, "symbol": att.symbol, "mode": att.mode},
    )
    changes.notify()


def _drop_live(att: StrategyAttachment) -> None:
    att.live_confirmed_at = None
    att.live_confirmed_by_session = None


async def set_mode(
    session: AsyncSession, user_id: int, attachment_id: int | str, mode: str, ip: str = ""
) -> AttachmentView:
    """Alert or paper. Live is refused here (``strategy_live_needs_confirmation``)."""
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    new = _mode(mode)
    old = att.mode
    if new != old and await _unresolved(session, [att.id or 0]):
        # Reconciliation needs the account those orders went to: not while it changes.
        raise ValidationFailed.single("mode", "strategy_orders_unresolved")
    if new != old:
        att.mode = new
        if old == MODE_LIVE:
            _drop_live(att)
        if new == MODE_PAPER:
            att.state = STATE_RECONCILING  # checked against the account before trading
        await _save_attachment(
            session,
            att,
            action=audit.STRATEGY_MODE_CHANGED,
            user_id=user_id,
            ip=ip,
            detail={"from": old, "to": new},
        )
    return await _view(session, att)


async def set_limits(
    session: AsyncSession,
    user_id: int,
    attachment_id: int | str,
    *,
    max_order_value: int | str | None,
    max_position_qty: int | str | None,
    max_orders_per_day: int | str | None,
    ip: str = "",
) -> AttachmentView:
    """Positive whole numbers (``""``/None: no limit). A live attachment needs all three."""
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    errors: FieldErrors = {}
    values = {
        "max_order_value": _limit(max_order_value, "max_order_value", errors),
        "max_position_qty": _limit(max_position_qty, "max_position_qty", errors),
        "max_orders_per_day": _limit(max_orders_per_day, "max_orders_per_day", errors),
    }
    if att.mode == MODE_LIVE:
        for field, value in values.items():
            if value is None and field not in errors:
                errors[field] = ("strategy_limit_required_live", {})
    if errors:
        raise ValidationFailed(errors)
    before = {f: getattr(att, f) for f in LIMIT_FIELDS}
    for field, value in values.items():
        setattr(att, field, value)
    await _save_attachment(
        session,
        att,
        action=audit.STRATEGY_LIMITS_CHANGED,
        user_id=user_id,
        ip=ip,
        detail={"before": before, "after": values},
    )
    return await _view(session, att)


async def go_live(
    session: AsyncSession,
    user_id: int,
    attachment_id: int | str,
    *,
    broker_account_id: int | str,
    confirmation: str,
    session_id: str = "",
    ip: str = "",
) -> AttachmentView:
    """Trade the user's broker account. Needs the typed phrase (Korean or English), one
    of the user's own accounts, all three limits and no kill switch; else nothing changes.

    ``session_id`` (the sign-in session's id, not its token) is stored with the
    confirmation, so the audit trail says which browser confirmed.
    """
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    errors: FieldErrors = {}
    typed = _normalise_phrase(confirmation)
    if typed not in {_normalise_phrase(p) for p in live_phrases().values()}:
        errors["confirmation"] = ("strategy_live_phrase", {})
    account_pk = _pk(broker_account_id)
    if account_pk is None:
        errors["broker_account_id"] = ("strategy_live_account", {})
    else:
        try:
            await credentials.owned_account(session, user_id, account_pk, ip)
        except NotFound:
            errors["broker_account_id"] = ("strategy_live_account", {})
    for field in LIMIT_FIELDS:
        if getattr(att, field) is None:
            errors[field] = ("strategy_limit_required_live", {})
    if att.killed_at is not None:
        errors["attachment"] = ("strategy_killed", {})
    elif await _unresolved(session, [att.id or 0]):
        errors["attachment"] = ("strategy_orders_unresolved", {})
    if errors:
        await _audit_attachment(
            audit.STRATEGY_LIVE_REFUSED,
            user_id,
            att,
            ip,
            {"fields": sorted(errors)},
            outcome=OUTCOME_FAILED,
        )
        raise ValidationFailed(errors)
    now = utcnow()
    att.mode = MODE_LIVE
    att.broker_account_id = account_pk
    att.live_confirmed_at = now
    att.live_confirmed_by_session = str(session_id)[:64] or None
    att.state = STATE_RECONCILING  # reconciled with the broker before the first order
    att.position_qty = att.position_at = None  # a new account: a new baseline
    att.last_error = ""
    await _save_attachment(
        session,
        att,
        action=audit.STRATEGY_LIVE_CONFIRMED,
        user_id=user_id,
        ip=ip,
        detail={
            "broker_account_id": account_pk,
            "session": att.live_confirmed_by_session,
            "limits": {f: getattr(att, f) for f in LIMIT_FIELDS},
        },
        now=now,
    )
    return await _view(session, att)


async def _kill_one(
    session: AsyncSession,
    att: StrategyAttachment,
    user_id: int,
    ip: str,
    settings: Settings | None,
) -> bool:
    if att.killed_at is not None:
        return False
    att.killed_at = utcnow()
    att.updated_at = att.killed_at
    session.add(att)
    await session.commit()
    cancelled, failed = await cancel_open_orders(att, lookup_opener(settings))
    await _audit_attachment(
        audit.STRATEGY_KILLED,
        user_id,
        att,
        ip,
        {"mode": att.mode, "cancelled": cancelled, "cancel_failed": failed},
    )
    return True


async def kill(
    session: AsyncSession,
    user_id: int,
    attachment_id: int | str,
    *,
    ip: str = "",
    settings: Settings | None = None,
) -> AttachmentView:
    """The kill switch: no order from now on, and open orders are cancelled (best effort).

    The switch is committed before anything else, so a broker that cannot be
    reached delays only the cancels, never the stop. Killing twice is harmless.
    """
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    if await _kill_one(session, att, user_id, ip, settings):
        changes.notify()
    return await _view(session, att)


async def kill_all(
    session: AsyncSession, user_id: int, *, ip: str = "", settings: Settings | None = None
) -> int:
    """Every one of the user's attachments; returns how many were not killed already."""
    atts = (
        await session.exec(
            select(StrategyAttachment).where(
                StrategyAttachment.user_id == user_id, col(StrategyAttachment.killed_at).is_(None)
            )
        )
    ).all()
    killed = 0
    for att in atts:
        killed += await _kill_one(session, att, user_id, ip, settings)
    if killed:
        changes.notify()
    return killed


async def revive(
    session: AsyncSession, user_id: int, attachment_id: int | str, ip: str = ""
) -> AttachmentView:
    """Lift the kill switch. A live attachment needs confirming again before it trades."""
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    if att.killed_at is not None:
        att.killed_at = None
        if att.mode == MODE_LIVE:
            _drop_live(att)
        if att.mode in (MODE_PAPER, MODE_LIVE):
            att.state = STATE_RECONCILING
        else:
            att.state = STATE_RUNNING
        await _save_attachment(
            session,
            att,
            action=audit.STRATEGY_REVIVED,
            user_id=user_id,
            ip=ip,
            detail={"mode": att.mode},
        )
    return await _view(session, att)


async def list_orders(
    session: AsyncSession,
    user_id: int,
    *,
    attachment_id: int | str | None = None,
    limit: int = 200,
    ip: str = "",
) -> list[StrategyOrderView]:
    """The user's strategy orders, newest first; refusals included (they say why)."""
    stmt = select(StrategyOrder).where(StrategyOrder.user_id == user_id)
    if attachment_id is not None:
        att = await _owned_attachment(session, user_id, attachment_id, ip)
        stmt = stmt.where(StrategyOrder.attachment_id == att.id)
    stmt = stmt.order_by(col(StrategyOrder.id).desc()).limit(max(1, min(limit, 1000)))
    # The runner updates these rows from its own sessions: always read them afresh.
    stmt = stmt.execution_options(populate_existing=True)
    return [_order_view(r) for r in (await session.exec(stmt)).all()]
