"""The user's own notification preferences (for now: the daily summary e-mail)."""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.users import User
from app.services.errors import NotFound

log = logging.getLogger(__name__)


async def set_daily_digest(session: AsyncSession, user_id: int, enabled: bool) -> bool:
    """Turn the caller's daily summary e-mail on or off; returns the stored value.

    Takes only the acting user's id, so there is no way to name another account.
    Whether the server can send e-mail at all is the caller's (the UI's) concern:
    turning it off must always work, even after SMTP has been removed.
    """
    result = await session.exec(
        update(User).where(col(User.id) == user_id).values(daily_digest=bool(enabled))
    )
    await session.commit()
    if result.rowcount != 1:
        raise NotFound()
    log.info("user %s turned the daily digest %s", user_id, "on" if enabled else "off")
    return bool(enabled)
