"""The paper desk: fills every user's open paper orders from the shared market stream.

Orders are placed in web requests (any worker), but they fill here, in the one
runner that sees the ticks. The desk keeps a :class:`PaperBroker` only for
accounts that have open orders, indexed by symbol, so a tick costs the open
orders of its own symbol and nothing for the thousands of idle accounts. After
each sync it declares the symbols it needs to the hub (consumer ``paper``), so
an order on a symbol nobody watches still gets its trades.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlmodel import col, func, select

from app import db
from app.config import Settings
from app.models.paper import PaperAccount, PaperOrderRow
from app.services import paper_accounts
from brokers.base import Fill, MarketData
from brokers.paper.broker import PaperBroker
from engines.market import Tick

log = logging.getLogger(__name__)

OPEN_STATES = ("open", "partial")

FillSink = Callable[[int, Fill], Awaitable[None]]


class PaperDesk:
    def __init__(
        self, market: MarketData, settings: Settings, on_fill: FillSink | None = None
    ) -> None:
        self.market = market
        self.settings = settings
        self.on_fill = on_fill
        self.brokers: dict[int, PaperBroker] = {}  # user id -> broker
        self._by_symbol: dict[str, set[int]] = {}
        self._seen: dict[int, tuple[int, int, int]] = {}
        self.fills = 0
        self.reloads = 0

    async def sync(self) -> set[str]:
        """Load brokers for accounts with open orders, drop the rest; return symbols needed.

        An account is re-read only when its open orders changed (their count, the
        newest id, or the account's revision after a reset), so a sync pass over
        thousands of resting orders is one grouped query, not a reload each.
        """
        async with db.session() as s:
            rows = (
                await s.exec(
                    select(
                        PaperAccount.user_id,
                        PaperAccount.revision,
                        func.count(col(PaperOrderRow.id)),
                        func.max(PaperOrderRow.id),
                    )
                    .join(PaperOrderRow, col(PaperOrderRow.account_id) == col(PaperAccount.id))
                    .where(col(PaperOrderRow.state).in_(OPEN_STATES))
                    .group_by(col(PaperAccount.user_id), col(PaperAccount.revision))
                )
            ).all()
            seen = {user_id: (rev, n, newest) for user_id, rev, n, newest in rows}
            for user_id in seen.keys() - self.brokers.keys():
                self.brokers[user_id] = await paper_accounts.open_broker(
                    s, user_id, self.market, self.settings
                )
                self._seen[user_id] = seen[user_id]
        for user_id in self.brokers.keys() - seen.keys():
            del self.brokers[user_id]
            self._seen.pop(user_id, None)
        for user_id, signature in seen.items():
            if self._seen.get(user_id) != signature:
                await self.brokers[user_id].reload()
                self._seen[user_id] = signature
                self.reloads += 1
        self._reindex()
        return set(self._by_symbol)

    def _reindex(self) -> None:
        index: dict[str, set[int]] = {}
        for user_id, broker in self.brokers.items():
            for symbol in broker.symbols_needed():
                index.setdefault(symbol, set()).add(user_id)
        self._by_symbol = index

    def symbols(self) -> set[str]:
        return set(self._by_symbol)

    async def on_tick(self, tick: Tick) -> None:
        users = self._by_symbol.get(tick.symbol)
        if not users:
            return
        filled_any = False
        for user_id in sorted(users):
            broker = self.brokers.get(user_id)
            if broker is None:
                continue
            try:
                fills = await broker.on_tick(tick)
            except Exception:
                log.exception("paper fills for user %s on %s failed", user_id, tick.symbol)
                continue
            for fill in fills:
                filled_any = True
                self.fills += 1
                if self.on_fill is not None:
                    try:
                        await self.on_fill(user_id, fill)
                    except Exception:
                        log.exception("paper fill notice to user %s failed", user_id)
        if filled_any:
            self._reindex()
