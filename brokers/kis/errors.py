"""KIS error codes and what each means to a caller, as ``brokers.base`` errors.

KIS reports failures in two shapes. The normal envelope carries ``rt_cd``
(``"0"`` is success), ``msg_cd`` and ``msg1``; the gateway (``EGW...`` codes, the
token endpoint) sometimes answers ``{"error_code", "error_description"}`` instead.
Either may come with HTTP 200 or an error status, so the code decides, not the
status. The mapping is what lets the runner react correctly: retry later
(``RateLimited``, ``BrokerUnavailable``), re-authenticate (``AuthExpired``), or
tell the user (``MarketClosed``, ``UnknownSymbol``, ``OrderRejected``).
"""

from __future__ import annotations

from brokers.base import (
    AuthExpired,
    BrokerError,
    BrokerUnavailable,
    MarketClosed,
    OrderRejected,
    RateLimited,
    UnknownSymbol,
)

__all__ = [
    "INVALID_TOKEN",
    "MARKET_CLOSED",
    "RATE_LIMITED",
    "TOKEN_EXPIRED",
    "TOKEN_ISSUE_LIMIT",
    "UNKNOWN_SYMBOL",
    "InvalidOrder",
    "KisApiError",
    "MalformedResponse",
    "Unsupported",
    "business_error",
]

TOKEN_EXPIRED = "EGW00123"  # "기간이 만료된 token 입니다."
INVALID_TOKEN = "EGW00121"  # "유효하지 않은 token 입니다."
TOKEN_ISSUE_LIMIT = "EGW00133"  # one token issue per minute
RATE_LIMITED = "EGW00201"  # "초당 거래건수를 초과하였습니다."
MARKET_CLOSED = "APBK0919"
UNKNOWN_SYMBOL = "APBK0656"


class MalformedResponse(BrokerUnavailable):
    """KIS answered something we cannot trust (bad JSON, a missing or wrong field).

    A ``BrokerUnavailable`` because the caller's right reaction is the same: do not
    act on it, retry later. ``reason`` names the field and the problem, never a
    credential, so it is safe to log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed KIS response: {reason}")
        self.reason = reason


class KisApiError(BrokerError):
    """A business error (``rt_cd`` != ``"0"``) with no more specific meaning to us."""

    def __init__(self, msg_cd: str, msg1: str) -> None:
        super().__init__(f"KIS {msg_cd}: {msg1}".strip())
        self.msg_cd = msg_cd
        self.msg1 = msg1


class InvalidOrder(OrderRejected):
    """We refused the order before sending it (bad quantity, off the tick grid...).

    An ``OrderRejected`` because the user-facing meaning is the same, but raised
    without spending a request of the rate budget or leaving a trace at the broker.
    """


def business_error(msg_cd: str, msg1: str, *, order: bool = False, symbol: str = "") -> BrokerError:
    """The error for an envelope with ``rt_cd`` != ``"0"`` (gateway codes excluded)."""
    text = f"{msg_cd} {msg1}".strip()
    if msg_cd == MARKET_CLOSED:
        return MarketClosed(text or "market closed")
    if msg_cd == UNKNOWN_SYMBOL:
        return UnknownSymbol(symbol)
    if msg_cd == RATE_LIMITED:
        return RateLimited(text, retry_after=1.0)
    if msg_cd == TOKEN_EXPIRED:
        return AuthExpired(text)
    if order:
        return OrderRejected(msg1 or msg_cd or "order rejected")
    return KisApiError(msg_cd, msg1)


class Unsupported(BrokerError):
    """A request this adapter cannot express (e.g. month bars: no engines Timeframe)."""
