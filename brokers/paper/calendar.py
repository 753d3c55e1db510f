"""KRX session hours for the paper market, from ``exchange_calendars``' XKRX calendar.

The calendar knows KRX holidays and the special sessions (the late open on the
first trading day of the year and on the college entrance exam day), which a
hand-written 09:00-15:30 rule would get wrong. Building it takes a couple of
seconds, so it is built lazily, once per process, and callers on an event loop
should warm it up in a thread with :func:`load_calendar` first.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar

__all__ = ["is_krx_open", "load_calendar"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_calendar: ExchangeCalendar | None = None
_warned_out_of_range = False
# The answer is the same for every instant within a minute, and the market asks
# once per step (typically every second), so remember the last minute asked.
_last: tuple[datetime, bool] | None = None


def load_calendar() -> ExchangeCalendar:
    """The XKRX calendar, built on first use. Thread-safe; blocks for ~2 s the first time."""
    global _calendar
    if _calendar is None:
        with _lock:
            if _calendar is None:
                import exchange_calendars as xcals  # heavy import (pandas), deferred on purpose

                log.info("building the XKRX exchange calendar")
                _calendar = xcals.get_calendar("XKRX")
    return _calendar


def is_krx_open(now: datetime) -> bool:
    """Whether KRX's regular session is trading at ``now`` (a tz-aware datetime).

    Instants outside the calendar's range (it spans about 20 years back and one
    year ahead of when it was built) count as closed: guessing "open" would
    make the paper market trade through holidays it knows nothing about.
    """
    global _last, _warned_out_of_range
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    last = _last
    if last is not None and last[0] == minute:
        return last[1]

    import pandas as pd
    from exchange_calendars.errors import MinuteOutOfBounds

    cal = load_calendar()
    try:
        is_open = bool(cal.is_open_on_minute(pd.Timestamp(minute)))
    except MinuteOutOfBounds:
        if not _warned_out_of_range:
            _warned_out_of_range = True
            log.warning(
                "%s is outside the XKRX calendar (%s .. %s); treating it as closed",
                minute.isoformat(),
                cal.first_minute.isoformat(),
                cal.last_minute.isoformat(),
            )
        is_open = False
    _last = (minute, is_open)
    return is_open
