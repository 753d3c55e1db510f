"""One user's KIS account as a full :class:`brokers.base.Broker`.

Market data, history, balance and orders go over REST with the user's own app
key (never the operator's service key); fills arrive both from the daily-fills
query and, in real time, as AES-encrypted execution notices on the user's own
websocket session (subscribed with their HTS id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

from brokers.base import Balance, CandlePeriod, Fill, OrderAck, OrderRequest, OrderStatus
from brokers.kis.market import KisMarketData
from engines.market import Candle


class KisBroker(KisMarketData):
    async def candles(
        self, symbol: str, period: CandlePeriod, start: date, end: date
    ) -> list[Candle]:
        return await self.rest.candles(symbol, period, start, end)

    async def balance(self) -> Balance:
        return await self.rest.balance()

    async def place_order(self, order: OrderRequest) -> OrderAck:
        return await self.rest.place_order(order)

    async def modify_order(self, ack: OrderAck, qty: int, price: int) -> OrderAck:
        return await self.rest.modify_order(ack, qty, price)

    async def cancel_order(self, ack: OrderAck, qty: int | None = None) -> OrderAck:
        return await self.rest.cancel_order(ack, qty)

    async def orders(self, day: date) -> list[OrderStatus]:
        return await self.rest.orders(day)

    async def fills(self, day: date) -> list[Fill]:
        return await self.rest.fills(day)

    def executions(self) -> AsyncIterator[Fill]:
        return self.stream.executions()
