"""The clock the KIS adapter reads: wall time, a monotonic timer and sleep.

Injected rather than read globally because the rules it drives span minutes and
hours (one token issue a minute, tokens that live 24 h, a 1-second rate window):
tests move wall time forward instead of waiting, while the rate limiter keeps
using a real monotonic timer where it must (its window is measured by the server).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC wall time: token expiry, "today" in KST, order times."""
        ...

    def monotonic(self) -> float:
        """Seconds on a timer that never jumps: the rate limiter's window."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait without blocking the event loop (backoff, rate-limit waits)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
