"""The portfolio page's numbers, from the paper account or one of the user's KIS accounts.

Both sources end in the same :class:`PortfolioView`, so the page and the
scheduled refresh do not care where the numbers came from. KIS credentials are
decrypted only for the duration of one balance call (audited, purpose
``portfolio``), and the access token comes from the encrypted token cache, so a
refresh every minute never issues a token (each issue texts the account holder).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import Settings, get_settings
from app.models.common import utcnow
from app.services import credentials, paper_accounts
from app.services.broker_tokens import VaultTokenStore
from app.services.errors import ValidationFailed
from brokers.base import Balance, BrokerError, MarketData
from brokers.kis.rest import KisRest

log = logging.getLogger(__name__)

PAPER = "paper"


@dataclass(frozen=True, slots=True)
class PortfolioView:
    """A :class:`Balance` plus what only some sources know. Valuation and unrealized
    P&L come from the balance itself, so every source computes them one way."""

    source: str
    balance: Balance
    orderable_cash: int
    as_of: datetime
    realized_pnl: int | None = None
    """Known for the paper account (its fills are ours); KIS does not report it here."""
    initial_cash: int | None = None

    @property
    def unrealized_pct(self) -> float:
        cost = sum(p.cost for p in self.balance.positions)
        return self.balance.pnl / cost * 100.0 if cost else 0.0

    @property
    def total_pnl(self) -> int | None:
        return None if self.initial_cash is None else self.balance.total - self.initial_cash


@dataclass(frozen=True, slots=True)
class Source:
    key: str
    label: str
    is_paper: bool


async def sources(session: AsyncSession, user_id: int) -> list[Source]:
    """The paper account first (always there), then the user's own broker accounts."""
    found = [Source(PAPER, "", True)]
    for row in await credentials.list_accounts(session, user_id):
        found.append(Source(f"kis:{row.id}", f"{row.label} {row.masked_account}", row.is_paper))
    return found


async def check_source(session: AsyncSession, user_id: int, key: str, ip: str = "") -> str:
    """``key`` if it is one of the caller's accounts; another user's is NotFound (audited)."""
    if key == PAPER:
        return key
    credential_id = _kis_id(key)
    row = await credentials.owned_account(session, user_id, credential_id, ip)
    return f"kis:{row.id}"


def _kis_id(source: str) -> int:
    head, _, tail = source.partition(":")
    if head != "kis" or not tail.isdigit():
        raise ValidationFailed.single("source", "portfolio_bad_source")
    return int(tail)


async def view(
    session: AsyncSession,
    user_id: int,
    source: str,
    market: MarketData,
    settings: Settings | None = None,
) -> PortfolioView:
    """Ownership: a KIS account of another user is NotFound (and audited) in
    ``credentials.use_kis_account``; the paper account is always the caller's own."""
    if source == PAPER:
        summary = await paper_accounts.account_summary(session, user_id, market, settings)
        return PortfolioView(
            source=PAPER,
            balance=summary.balance,
            orderable_cash=summary.orderable_cash,
            as_of=utcnow(),
            realized_pnl=summary.realized_pnl,
            initial_cash=summary.initial_cash,
        )
    balance = await kis_balance(session, user_id, _kis_id(source), settings)
    return PortfolioView(
        source=source, balance=balance, orderable_cash=balance.cash, as_of=utcnow()
    )


async def kis_balance(
    session: AsyncSession, user_id: int, credential_id: int, settings: Settings | None = None
) -> Balance:
    cfg = settings or get_settings()
    secrets = await credentials.use_kis_account(
        session, user_id, credential_id, purpose="portfolio"
    )
    rest = KisRest(
        app_key=secrets.app_key,
        app_secret=secrets.app_secret,
        paper=secrets.is_paper,
        account_no=secrets.account_no,
        product_code=secrets.product_code,
        base_url=cfg.kis_paper_base_url if secrets.is_paper else cfg.kis_real_base_url,
        token_store=VaultTokenStore(credential_id, user_id, secrets.app_key),
        rate_per_s=cfg.kis_paper_rate_per_s if secrets.is_paper else cfg.kis_real_rate_per_s,
        timeout=cfg.kis_timeout,
    )
    try:
        return await rest.balance()
    except BrokerError as exc:
        log.info("KIS balance for credential %s failed: %s", credential_id, type(exc).__name__)
        raise
    finally:
        await rest.close()
