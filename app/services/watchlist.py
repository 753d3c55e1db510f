"""The user's watchlist. Every function takes the acting user's id and only touches their rows."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.market import Symbol
from app.models.watchlists import Watchlist, WatchlistItem
from app.services import audit, changes, symbols
from app.services.errors import NotFound, ValidationFailed

MAX_ITEMS = 100


@dataclass(frozen=True, slots=True)
class WatchRow:
    item_id: int
    code: str
    name_ko: str
    name_en: str
    market: str


async def default_watchlist(session: AsyncSession, user_id: int) -> Watchlist:
    wl = (
        await session.exec(
            select(Watchlist).where(Watchlist.user_id == user_id).order_by(col(Watchlist.id))
        )
    ).first()
    if wl is None:
        wl = Watchlist(user_id=user_id, name="")
        session.add(wl)
        await session.commit()
        await session.refresh(wl)
    return wl


async def list_rows(session: AsyncSession, user_id: int) -> list[WatchRow]:
    return (await rows_of_users(session, [user_id])).get(user_id, [])


async def rows_of_users(session: AsyncSession, user_ids: list[int]) -> dict[int, list[WatchRow]]:
    """Several users' rows in one query (a worker re-reading the watchlists of every
    user it serves); users without rows are absent."""
    if not user_ids:
        return {}
    stmt = (
        select(WatchlistItem, Symbol, Watchlist.user_id)
        .join(Watchlist, col(Watchlist.id) == col(WatchlistItem.watchlist_id))
        .join(Symbol, col(Symbol.code) == col(WatchlistItem.symbol))
        .where(col(Watchlist.user_id).in_(user_ids))
        .order_by(col(Watchlist.user_id), col(WatchlistItem.position), col(WatchlistItem.id))
    )
    out: dict[int, list[WatchRow]] = {}
    for item, s, uid in (await session.exec(stmt)).all():
        out.setdefault(uid, []).append(
            WatchRow(item.id or 0, s.code, s.name_ko, s.name_en, s.market)
        )
    return out


async def add(session: AsyncSession, user_id: int, query: str) -> Symbol:
    """Add by code or name. Unknown, ambiguous, duplicate and over-limit input is refused whole."""
    sym = await symbols.resolve(session, query)
    wl = await default_watchlist(session, user_id)
    count_stmt = (
        select(func.count()).select_from(WatchlistItem).where(WatchlistItem.watchlist_id == wl.id)
    )
    count = (await session.exec(count_stmt)).one()
    dup_stmt = select(WatchlistItem).where(
        WatchlistItem.watchlist_id == wl.id, WatchlistItem.symbol == sym.code
    )
    if (await session.exec(dup_stmt)).first() is not None:
        raise ValidationFailed.single(
            "symbol", "duplicate_watch", name=sym.name_ko, name_en=sym.name_en
        )
    if count >= MAX_ITEMS:
        raise ValidationFailed.single("symbol", "too_many_watch", limit=MAX_ITEMS)
    assert wl.id is not None
    session.add(WatchlistItem(watchlist_id=wl.id, symbol=sym.code, position=count))
    try:
        await session.commit()
    except IntegrityError as exc:  # a double click racing itself
        await session.rollback()
        raise ValidationFailed.single(
            "symbol", "duplicate_watch", name=sym.name_ko, name_en=sym.name_en
        ) from exc
    changes.notify()
    return sym


async def remove(session: AsyncSession, user_id: int, item_id: int, ip: str = "") -> str:
    """Remove one item; another user's item id is reported as not found, and audited."""
    stmt = (
        select(WatchlistItem)
        .join(Watchlist, col(Watchlist.id) == col(WatchlistItem.watchlist_id))
        .where(WatchlistItem.id == item_id, Watchlist.user_id == user_id)
    )
    item = (await session.exec(stmt)).first()
    if item is None:
        await audit.denied(user_id, "watchlist_item", item_id, ip)
        raise NotFound()
    code = item.symbol
    await session.delete(item)
    await session.commit()
    changes.notify()
    return code
