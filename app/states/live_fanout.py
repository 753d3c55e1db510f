"""Live prices to the tabs this worker holds, straight to their sockets.

Prices change several times a second per symbol, for every open tab. Pushed through
Reflex's state manager (a ``modify_state`` of each user's shared state, then of each
linked tab), every tab update costs a Redis lock, a state load and a save, about
10 ms of one process's CPU, and all of it lands on the leader: ``python -m bench ui``
measured the leader saturated at ~100 tab updates a second, p95 3.3-3.8 s for 200
tabs. So prices take another way: the leader publishes each coalesced push once
(``live_bus``), every worker receives it and sends each of *its own* tabs the new
prices as an ordinary state delta, without touching the state manager. The cost is
a JSON encode and a socket write per tab, spread over all workers.

What stays in the shared states (``user-<id>``): the watchlist rows, toasts and the
unread count, which change rarely and must reach every tab of a user on any worker.

The registry is per process: a tab registers here when its connect event runs,
which is in the worker holding its socket. Tabs whose socket is gone are dropped at
the next push; the watchlist rows of this worker's users are re-read every
``ROWS_REFRESH`` seconds, so a symbol added in a tab served elsewhere shows up here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import reflex as rx
from reflex.state import StateUpdate
from reflex_base.constants.state import FIELD_MARKER

from app import db
from app.runtime.background import consume, running
from app.runtime.live_bus import QuoteViews, get_live_bus
from app.services import watchlist as watchlist_service

log = logging.getLogger(__name__)

ROWS_REFRESH = 3.0
ROWS_BATCH = 500
EMPTY_QUOTE = {"price": "", "change": "", "diff": "", "dir": "flat", "at": ""}


def row_view(r: watchlist_service.WatchRow) -> dict[str, str]:
    return {
        "item_id": str(r.item_id),
        "code": r.code,
        "name_ko": r.name_ko,
        "name_en": r.name_en,
        "market": r.market,
    }


def watch_view(rows: list[dict[str, str]], quotes: QuoteViews) -> list[dict[str, str]]:
    return [{**row, **quotes.get(row["code"], EMPTY_QUOTE)} for row in rows]


@dataclass
class _User:
    rows: list[dict[str, str]] = field(default_factory=list)
    codes: frozenset[str] = frozenset()
    quotes: QuoteViews = field(default_factory=dict)
    tabs: set[str] = field(default_factory=set)


class LiveFanout:
    def __init__(self) -> None:
        self.users: dict[int, _User] = {}
        self.by_code: dict[str, set[int]] = {}
        """code -> this worker's users watching it: a push touches only those."""
        self.tab_user: dict[str, int] = {}
        self.symbol_tabs: dict[str, str] = {}
        """client token -> the code its symbol page shows."""
        self.sent = 0

    # ---- registration (from state handlers, in the tab's own worker) ----------------
    def set_rows(self, user_id: int, rows: list[dict[str, str]], quotes: QuoteViews) -> None:
        user = self.users.setdefault(user_id, _User())
        codes = frozenset(r["code"] for r in rows)
        self._index(user_id, user.codes, codes)
        user.rows = rows
        user.codes = codes
        user.quotes = {c: v for c, v in {**user.quotes, **quotes}.items() if c in user.codes}

    def watch(self, token: str, user_id: int) -> None:
        previous = self.tab_user.get(token)
        if previous is not None and previous != user_id:
            self._drop_tab(token)
        self.tab_user[token] = user_id
        self.users.setdefault(user_id, _User()).tabs.add(token)

    def follow_symbol(self, token: str, code: str) -> None:
        self.symbol_tabs[token] = code

    def unfollow_symbol(self, token: str) -> None:
        self.symbol_tabs.pop(token, None)

    def _index(self, user_id: int, before: frozenset[str], after: frozenset[str]) -> None:
        for code in before - after:
            watchers = self.by_code.get(code)
            if watchers is not None:
                watchers.discard(user_id)
                if not watchers:
                    del self.by_code[code]
        for code in after - before:
            self.by_code.setdefault(code, set()).add(user_id)

    def _drop_tab(self, token: str) -> None:
        user_id = self.tab_user.pop(token, None)
        self.symbol_tabs.pop(token, None)
        user = self.users.get(user_id) if user_id is not None else None
        if user is not None:
            user.tabs.discard(token)
            if not user.tabs:
                self._index(user_id, user.codes, frozenset())  # type: ignore[arg-type]
                del self.users[user_id]  # type: ignore[arg-type]

    # ---- delivery ---------------------------------------------------------------------
    async def deliver(self, app: rx.App, views: QuoteViews) -> int:
        """Send each local tab the prices it shows that moved; returns tabs updated."""
        from app.states.live import LiveState, SymbolLiveState

        namespace = app.event_namespace
        if namespace is None or not views:
            return 0
        manager = namespace._token_manager
        sockets, me = manager.token_to_socket, manager.instance_id

        def local(token: str) -> bool:
            record = sockets.get(token)
            if record is None or record.instance_id != me:
                # Gone, or reconnected to another worker, which registered it there.
                self._drop_tab(token)
                return False
            return True

        live_name = LiveState.get_full_name()
        sent = 0
        touched = {uid for code in views for uid in self.by_code.get(code, ())}
        for user_id in sorted(touched):
            user = self.users.get(user_id)
            if user is None:
                continue
            moved = user.codes.intersection(views)
            if not moved:
                continue
            user.quotes.update({c: views[c] for c in moved})
            delta = {
                live_name: {
                    "quotes" + FIELD_MARKER: dict(user.quotes),
                    "watch_view" + FIELD_MARKER: watch_view(user.rows, user.quotes),
                }
            }
            for token in [t for t in list(user.tabs) if local(t)]:
                sent += await self._emit(namespace, token, delta)
        symbol_name = SymbolLiveState.get_full_name()
        for token, code in list(self.symbol_tabs.items()):
            view = views.get(code)
            if view is not None and local(token):
                delta = {symbol_name: {"quote" + FIELD_MARKER: view}}
                sent += await self._emit(namespace, token, delta)
        self.sent += sent
        return sent

    @staticmethod
    async def _emit(namespace: object, token: str, delta: dict) -> int:
        try:
            await namespace.emit_update(StateUpdate(delta=delta), token)  # type: ignore[attr-defined]
            return 1
        except Exception as exc:  # one broken socket must not stop the others
            log.warning("price push to a tab failed: %r", exc)
            return 0

    async def refresh_rows(self) -> None:
        """Re-read the watchlists of this worker's users (edits made in other workers),
        ``ROWS_BATCH`` users a query. Users with no tab here any more are dropped (a
        watchlist edit registers its user even when their tabs live elsewhere)."""
        for user_id in [u for u, user in self.users.items() if not user.tabs]:
            self._index(user_id, self.users.pop(user_id).codes, frozenset())
        users = sorted(self.users)
        for i in range(0, len(users), ROWS_BATCH):
            batch = users[i : i + ROWS_BATCH]
            async with db.session() as s:
                found = await watchlist_service.rows_of_users(s, batch)
            for user_id in batch:
                if user_id in self.users:
                    self.set_rows(user_id, [row_view(r) for r in found.get(user_id, [])], {})


FANOUT = LiveFanout()


async def _consume(app: rx.App) -> None:
    async def deliver(views: QuoteViews) -> None:
        await FANOUT.deliver(app, views)

    await consume("live price stream", lambda: get_live_bus().quote_stream(), deliver)


async def _keep_rows() -> None:
    while True:
        await asyncio.sleep(ROWS_REFRESH)
        try:
            await FANOUT.refresh_rows()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("watchlist refresh for live prices failed: %r", exc)


@contextlib.asynccontextmanager
async def fanout_lifespan(app: rx.App) -> AsyncIterator[None]:
    """In every worker, leader or not: its tabs get their prices from here."""
    async with running(**{"live-fanout": _consume(app), "live-fanout-rows": _keep_rows()}):
        yield
