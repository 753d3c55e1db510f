"""Tells the runner, in this process, that rules or watchlists changed.

The runner also polls, so a change made in another worker is picked up within
``rule_sync_interval``; this only makes the single-process case immediate.
"""

from __future__ import annotations

import asyncio

_listeners: set[asyncio.Event] = set()


def subscribe() -> asyncio.Event:
    ev = asyncio.Event()
    _listeners.add(ev)
    return ev


def unsubscribe(ev: asyncio.Event) -> None:
    _listeners.discard(ev)


def notify() -> None:
    for ev in list(_listeners):
        ev.set()
