"""Kiwoom Securities REST API adapter (second broker): REST, websocket, parsing.

See :mod:`brokers.kiwoom.broker` for what is supported and
``/work/shared/reference/kis-openapi.md`` (Kiwoom REST section) for the protocol.
"""

from brokers.kiwoom.auth import AccessToken, MemoryTokenStore, TokenManager, TokenStore
from brokers.kiwoom.broker import KiwoomBroker, KiwoomUnsupported
from brokers.kiwoom.parsing import MalformedResponse
from brokers.kiwoom.rest import CredentialsRejected, KiwoomApiError, KiwoomRest
from brokers.kiwoom.ws import KiwoomStream
from brokers.ratelimit import SlidingWindowLimiter

__all__ = [
    "AccessToken",
    "CredentialsRejected",
    "KiwoomApiError",
    "KiwoomBroker",
    "KiwoomRest",
    "KiwoomStream",
    "KiwoomUnsupported",
    "MalformedResponse",
    "MemoryTokenStore",
    "SlidingWindowLimiter",
    "TokenManager",
    "TokenStore",
]
