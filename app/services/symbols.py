"""Symbol master: kept in the DB so search, joins and foreign keys work without a broker."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import func, or_
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.market import Symbol
from app.services.errors import ValidationFailed
from brokers.base import SymbolInfo

_CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")


async def sync_master(session: AsyncSession, infos: Iterable[SymbolInfo]) -> int:
    """Upsert the broker's symbol master; returns how many rows were new."""
    existing = {s.code: s for s in (await session.exec(select(Symbol))).all()}
    added = 0
    for info in infos:
        row = existing.get(info.code)
        if row is None:
            session.add(
                Symbol(
                    code=info.code, name_ko=info.name_ko, name_en=info.name_en, market=info.market
                )
            )
            added += 1
        else:
            row.name_ko, row.name_en, row.market, row.active = (
                info.name_ko,
                info.name_en,
                info.market,
                True,
            )
    await session.commit()
    return added


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(session: AsyncSession, query: str, limit: int = 10) -> list[Symbol]:
    """Code prefix first, then names containing the text (Korean or English)."""
    q = query.strip()
    if not q:
        return []
    pattern = f"%{_escape_like(q.lower())}%"
    stmt = (
        select(Symbol)
        .where(Symbol.active)
        .where(
            or_(
                Symbol.code.startswith(q, autoescape=True),
                func.lower(Symbol.name_ko).like(pattern, escape="\\"),
                func.lower(Symbol.name_en).like(pattern, escape="\\"),
            )
        )
        .limit(200)
    )
    rows = list((await session.exec(stmt)).all())
    ql = q.lower()

    def rank(s: Symbol) -> tuple[int, str]:
        if s.code == q or s.name_ko.lower() == ql or s.name_en.lower() == ql:
            return (0, s.code)
        if s.code.startswith(q) or s.name_ko.lower().startswith(ql):
            return (1, s.code)
        if s.name_en.lower().startswith(ql):
            return (2, s.code)
        return (3, s.code)

    rows.sort(key=rank)
    return rows[:limit]


async def resolve(session: AsyncSession, query: str, field: str = "symbol") -> Symbol:
    """Turn what the user typed into exactly one listed symbol, or a clear error.

    Accepts a 6-digit code anywhere in the text (so "삼성전자 (005930)" from the
    suggestion list works), an exact name, or a query with a single match.
    """
    q = (query or "").strip()
    if not q:
        raise ValidationFailed.single(field, "symbol_required")
    code_match = _CODE.search(q)
    if code_match:
        row = await session.get(Symbol, code_match.group(1))
        if row is None or not row.active:
            raise ValidationFailed.single(field, "unknown_symbol", query=q)
        return row
    matches = await search(session, q, limit=2)
    exact = [s for s in matches if s.name_ko.lower() == q.lower() or s.name_en.lower() == q.lower()]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValidationFailed.single(field, "unknown_symbol", query=q)
    raise ValidationFailed.single(field, "ambiguous_symbol", query=q)


async def get_many(session: AsyncSession, codes: Iterable[str]) -> dict[str, Symbol]:
    codes = list(set(codes))
    if not codes:
        return {}
    rows = (await session.exec(select(Symbol).where(Symbol.code.in_(codes)))).all()
    return {s.code: s for s in rows}
