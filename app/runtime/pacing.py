"""How often the worker may send to one channel, and when it must wait.

Chat services limit messages per chat (Telegram: about one a second), per webhook
(Discord: five per two seconds) or per account. A worker that ignores this gets
429s and, worse, a user's phone buzzing a hundred times for one market move. So
each (user, channel) has a minimum interval between sends; while it waits, new
alerts queue up, and the next send carries all of them as one digest message.

The pacer lives in the process that delivers (one runner holds the leader lock),
so a plain dict keyed by channel is enough; the notifier's own limiters and the
server's 429 answers stay as the second line of defence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

ChannelKey = tuple[int, str]
"""(user id, delivery channel), e.g. (7, "telegram:12") or (7, "email")."""

DEFAULT_INTERVALS: dict[str, float] = {
    "telegram": 1.0,
    "discord": 0.5,
    "kakao": 1.0,
    "webpush": 1.0,
    "fcm": 0.5,
    "email": 2.0,
    "email_extra": 2.0,
    "in_app": 0.0,
}
_PRUNE_AT = 4096


def parse_intervals(text: str) -> dict[str, float]:
    """``"telegram=1,discord=0.5"`` over the defaults; a malformed entry is an error at
    start-up, not a silently unpaced channel."""
    out = dict(DEFAULT_INTERVALS)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, sep, raw = part.partition("=")
        kind = kind.strip()
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not sep or not kind or value < 0 or value != value or value > 3600:
            raise ValueError(f"DELIVERY_INTERVALS entry {part!r} must be kind=seconds (0 to 3600)")
        out[kind] = value
    return out


def kind_of(channel: str) -> str:
    return channel.partition(":")[0]


class ChannelPacer:
    def __init__(
        self, intervals: Mapping[str, float], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.intervals = dict(intervals)
        self._clock = clock
        self._free_at: dict[ChannelKey, float] = {}

    def interval(self, channel: str) -> float:
        return self.intervals.get(kind_of(channel), 1.0)

    def wait(self, key: ChannelKey) -> float:
        """Seconds until ``key`` may be sent to (0.0: now)."""
        free_at = self._free_at.get(key)
        if free_at is None:
            return 0.0
        left = free_at - self._clock()
        if left <= 0:
            del self._free_at[key]
            return 0.0
        return left

    def sent(self, key: ChannelKey, hold: float = 0.0) -> None:
        """A send to ``key`` just ended; ``hold`` is a server's retry-after, if longer."""
        now = self._clock()
        if len(self._free_at) >= _PRUNE_AT:
            self._free_at = {k: t for k, t in self._free_at.items() if t > now}
        gap = max(self.interval(key[1]), hold)
        if gap > 0:
            self._free_at[key] = max(self._free_at.get(key, now), now + gap)
