"""Kiwoom access tokens: issue once, reuse until they expire.

A Kiwoom token (``POST /oauth2/token``) lives about a day. Issuing one per request
would be slow and is itself rate-limited, so the :class:`TokenManager` keeps the
token in memory and in a :class:`TokenStore`. The store is a hook: the app can
persist tokens encrypted (like every other secret, see ARCHITECTURE.md) so a
restart or a second worker does not issue a new one. Tokens never reach a log
line: :class:`AccessToken` redacts itself in ``repr``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["AccessToken", "MemoryTokenStore", "TokenManager", "TokenStore"]

log = logging.getLogger(__name__)

EXPIRY_MARGIN = timedelta(minutes=5)
"""A token this close to ``expires_dt`` is treated as expired, so a request never
leaves with a token that dies in flight."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and when it stops working (aware UTC)."""

    value: str = field(repr=False)
    expires_at: datetime
    token_type: str = "Bearer"

    def __repr__(self) -> str:  # a credential: never in a log line
        return f"AccessToken('***', expires_at={self.expires_at.isoformat()})"

    __str__ = __repr__

    def valid_at(self, now: datetime, margin: timedelta = EXPIRY_MARGIN) -> bool:
        return now + margin < self.expires_at

    @property
    def header(self) -> str:
        """The ``authorization`` header value. Kiwoom answers ``token_type`` in
        lower case (``bearer``) but documents the header as ``Bearer``."""
        return f"Bearer {self.value}"


@runtime_checkable
class TokenStore(Protocol):
    """Where tokens outlive one client: the app implements it over its encrypted vault."""

    async def load(self) -> AccessToken | None: ...

    async def save(self, token: AccessToken) -> None: ...

    async def clear(self) -> None: ...


class MemoryTokenStore:
    """A process-local store: enough for tests and for one long-lived process."""

    def __init__(self) -> None:
        self._token: AccessToken | None = None

    async def load(self) -> AccessToken | None:
        return self._token

    async def save(self, token: AccessToken) -> None:
        self._token = token

    async def clear(self) -> None:
        self._token = None

    def __repr__(self) -> str:
        return f"MemoryTokenStore(has_token={self._token is not None})"


class TokenManager:
    """Hands out a valid token, issuing a new one only when none is cached.

    A lock serialises issues, so a burst of concurrent first requests issues one
    token, not one each. :meth:`invalidate` takes the token that failed, so when
    several requests fail with the same stale token only the first clears it and
    the rest pick up the fresh one.
    """

    def __init__(
        self,
        issue: Callable[[], Awaitable[AccessToken]],
        store: TokenStore | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._issue = issue
        self._store: TokenStore = store if store is not None else MemoryTokenStore()
        self._clock = clock
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self.issued = 0
        """How many tokens this manager issued (for tests and metrics)."""

    async def token(self) -> AccessToken:
        async with self._lock:
            now = self._clock()
            if self._token is not None and self._token.valid_at(now):
                return self._token
            stored = await self._store.load()
            if stored is not None and stored.valid_at(now):
                self._token = stored
                return stored
            token = await self._issue()
            self.issued += 1
            log.info("kiwoom: issued a token, expires %s", token.expires_at.isoformat())
            self._token = token
            await self._store.save(token)
            return token

    async def invalidate(self, token: AccessToken) -> None:
        """Forget ``token`` (Kiwoom said it is no longer valid) if it is still current."""
        async with self._lock:
            if self._token is not None and self._token.value != token.value:
                return
            self._token = None
            stored = await self._store.load()
            if stored is None or stored.value == token.value:
                await self._store.clear()
