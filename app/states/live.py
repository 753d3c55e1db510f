"""Live data for open pages: per-user shared state, and per-tab prices.

Each browser links its ``LiveState`` to the token ``user-<id>``, so the watchlist
rows, toasts and the unread count reach every tab of a user on any worker through
Reflex's state manager. Prices, which change several times a second, reach each tab
from the worker holding its socket (``live_fanout``); this module registers the tab
there when it connects.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import reflex as rx
from reflex.istate.manager.token import BaseStateToken

from app import db
from app.runtime.background import consume, running
from app.runtime.live_bus import get_live_bus
from app.services import alerts as alerts_service
from app.services import watchlist as watchlist_service
from app.states.live_fanout import FANOUT, row_view, watch_view
from app.states.session import SessionState

log = logging.getLogger(__name__)


def user_token(user_id: int) -> str:
    return f"user-{user_id}"  # no underscore: Reflex forbids it in shared tokens


class LiveState(rx.SharedState):
    watch_rows: list[dict[str, str]] = []
    quotes: dict[str, dict[str, str]] = {}
    toast: dict[str, str] = {}
    unread: int = 0

    @rx.var
    def watch_view(self) -> list[dict[str, str]]:
        return watch_view(self.watch_rows, self.quotes)

    @rx.event
    async def connect(self) -> None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return
        token = self.router.session.client_token
        linked = await self._link_to(user_token(user.id))
        await linked._refresh(user.id)
        FANOUT.watch(token, user.id)

    async def _refresh(self, user_id: int) -> None:
        async with db.session() as s:
            rows = await watchlist_service.list_rows(s, user_id)
            self.unread = await alerts_service.unread_count(s, user_id)
        self.watch_rows = [row_view(r) for r in rows]
        try:
            snaps = await get_live_bus().snapshots([r.code for r in rows])
        except Exception as exc:  # prices arrive with the next push instead
            log.warning("live snapshots unavailable: %r", exc)
            snaps = {}
        fresh = {code: snap.view() for code, snap in snaps.items()}
        self.quotes = {**self.quotes, **fresh}
        FANOUT.set_rows(user_id, self.watch_rows, fresh)

    @rx.event
    def dismiss_toast(self) -> None:
        self.toast = {}


class SymbolLiveState(rx.State):
    """The price on a symbol page, pushed to the tab between the chart's slower
    redraws (``live_fanout``)."""

    quote: dict[str, str] = {}

    @rx.event
    async def follow(self, code: str) -> None:
        """Queued by the symbol page's load, once it has found the symbol."""
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or not code.isalnum() or len(code) > 12:
            return
        self.quote = {}
        FANOUT.follow_symbol(self.router.session.client_token, code)
        await self._seed(code)

    async def _seed(self, code: str) -> None:
        """The last known price, until the next push."""
        try:
            snap = await get_live_bus().snapshot(code)
        except Exception as exc:
            log.warning("live snapshot of %s unavailable: %r", code, exc)
            return
        if snap is not None:
            self.quote = snap.view()


class ReflexUiSink:
    """The runner's window into open pages, through Reflex's state manager."""

    def __init__(self, app: rx.App) -> None:
        self.app = app

    async def push_alert(self, user_id: int, alert: dict) -> None:
        view = {k: str(v) for k, v in alert.items()}
        # The count is read, not incremented: a page that loaded after the alert was
        # stored but before this push has already counted it (CI saw a badge of 2).
        async with db.session() as s:
            unread = await alerts_service.unread_count(s, user_id)
        async with self.app.modify_state(
            BaseStateToken(ident=user_token(user_id), cls=LiveState)
        ) as root:
            live = await root.get_state(LiveState)
            live.toast = view
            live.unread = unread


async def relay_alerts(app: rx.App) -> None:
    """In every web worker: in-app alerts an engine running apart put on the bus, shown
    as if the engine were in this process. Each is taken by one worker."""
    sink = ReflexUiSink(app)

    async def show(item: tuple[int, dict]) -> None:
        user_id, alert = item
        try:
            await sink.push_alert(user_id, alert)
        except Exception as exc:  # one alert's page state must not stop the rest
            log.warning("in-app alert for user %s not shown: %r", user_id, exc)

    await consume("alert relay", lambda: get_live_bus().alerts(), show)


@contextlib.asynccontextmanager
async def alert_relay_lifespan(app: rx.App) -> AsyncIterator[None]:
    async with running(**{"alert-relay": relay_alerts(app)}):
        yield
