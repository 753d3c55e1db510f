"""The paper broker: a simulated KRX market, so the platform runs with no broker account."""

from brokers.paper.market import SimulatedMarket
from brokers.paper.symbols import SYMBOLS, PaperSymbol, by_code, search

__all__ = ["SYMBOLS", "PaperSymbol", "SimulatedMarket", "by_code", "search"]
