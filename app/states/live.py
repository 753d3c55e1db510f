"""Per-user live data shared by all of that user's open tabs.

Each browser links its ``LiveState`` to the token ``user-<id>``; the runner
writes to that token once per push interval and Reflex fans the change out
to every linked tab.
"""

from __future__ import annotations

import logging

import reflex as rx
from reflex.istate.manager.token import BaseStateToken

from app import db
from app.runtime.live_bus import get_live_bus
from app.services import alerts as alerts_service
from app.services import watchlist as watchlist_service
from app.states.session import SessionState

log = logging.getLogger(__name__)
_EMPTY_QUOTE = {"price": "", "change": "", "diff": "", "dir": "flat", "at": ""}


def user_token(user_id: int) -> str:
    return f"user-{user_id}"  # no underscore: Reflex forbids it in shared tokens


class LiveState(rx.SharedState):
    watch_rows: list[dict[str, str]] = []
    quotes: dict[str, dict[str, str]] = {}
    toast: dict[str, str] = {}
    unread: int = 0

    @rx.var
    def watch_view(self) -> list[dict[str, str]]:
        return [{**row, **self.quotes.get(row["code"], _EMPTY_QUOTE)} for row in self.watch_rows]

    @rx.event
    async def connect(self) -> None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return
        linked = await self._link_to(user_token(user.id))
        await linked._refresh(user.id)

    async def _refresh(self, user_id: int) -> None:
        async with db.session() as s:
            rows = await watchlist_service.list_rows(s, user_id)
            self.unread = await alerts_service.unread_count(s, user_id)
        self.watch_rows = [
            {
                "item_id": str(r.item_id),
                "code": r.code,
                "name_ko": r.name_ko,
                "name_en": r.name_en,
                "market": r.market,
            }
            for r in rows
        ]
        try:
            snaps = await get_live_bus().snapshots([r.code for r in rows])
        except Exception as exc:  # prices arrive with the next push instead
            log.warning("live snapshots unavailable: %r", exc)
            snaps = {}
        self.quotes = {**self.quotes, **{code: snap.view() for code, snap in snaps.items()}}

    @rx.event
    def dismiss_toast(self) -> None:
        self.toast = {}


class ReflexUiSink:
    """The runner's window into open pages, through Reflex's state manager."""

    def __init__(self, app: rx.App) -> None:
        self.app = app

    async def push_prices(self, user_id: int, quotes: dict[str, dict[str, str]]) -> None:
        async with self.app.modify_state(
            BaseStateToken(ident=user_token(user_id), cls=LiveState)
        ) as root:
            live = await root.get_state(LiveState)
            live.quotes = {**live.quotes, **quotes}

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
