"""Prices to the tabs a worker holds: who gets what, and how often a symbol goes out.

The socket layer here is a recording stand-in for Reflex's event namespace (its
token table and ``emit_update``); the real one is exercised by the browser tests
(the walking skeleton watches prices change) and by ``python -m bench ui``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from app.runtime.live_bus import LocalLiveBus
from app.runtime.runner import Runner
from app.states.live import LiveState, SymbolLiveState
from app.states.live_fanout import LiveFanout
from brokers.paper.replay import ReplayMarket
from brokers.paper.symbols import SYMBOLS
from tests.integration.helpers import T0, seed_symbols, settings, ticks

LIVE = LiveState.get_full_name()
SYMBOL = SymbolLiveState.get_full_name()


@dataclass
class Sockets:
    instance_id: str = "me"
    token_to_socket: dict[str, SimpleNamespace] = field(default_factory=dict)
    sent: list[tuple[str, dict]] = field(default_factory=list)

    def connect(self, token: str, instance: str = "me") -> None:
        self.token_to_socket[token] = SimpleNamespace(instance_id=instance, sid=f"sid-{token}")

    @property
    def _token_manager(self) -> Sockets:
        return self

    async def emit_update(self, update: object, token: str) -> None:
        self.sent.append((token, update.delta))  # type: ignore[attr-defined]


def _rows(*codes: str) -> list[dict[str, str]]:
    return [
        {"item_id": str(i), "code": c, "name_ko": c, "name_en": c, "market": "KOSPI"}
        for i, c in enumerate(codes)
    ]


def _view(price: str) -> dict[str, str]:
    return {"price": price, "change": "+0.00%", "diff": "+0", "dir": "flat", "at": "1"}


async def test_each_local_tab_gets_only_its_users_symbols_with_the_whole_view():
    sockets = Sockets()
    app = SimpleNamespace(event_namespace=sockets)
    fan = LiveFanout()
    fan.set_rows(1, _rows("005930", "000660"), {"005930": _view("69,900")})
    fan.set_rows(2, _rows("000660"), {})
    for token, user in (("a1", 1), ("a2", 1), ("b1", 2), ("far", 2)):
        sockets.connect(token, "other-worker" if token == "far" else "me")
        fan.watch(token, user)
    fan.follow_symbol("c1", "051910")
    sockets.connect("c1")

    sent = await fan.deliver(app, {"005930": _view("70,100"), "051910": _view("400,000")})
    assert sent == 3
    got = {token: delta for token, delta in sockets.sent}
    assert set(got) == {"a1", "a2", "c1"}  # user 2 has no 005930; "far" is not ours
    live = got["a1"][LIVE]
    assert live["quotes_rx_state_"] == {"005930": _view("70,100")}
    view = live["watch_view_rx_state_"]
    assert [(r["code"], r["price"]) for r in view] == [("005930", "70,100"), ("000660", "")]
    assert got["c1"] == {SYMBOL: {"quote_rx_state_": _view("400,000")}}

    sockets.sent.clear()
    await fan.deliver(app, {"000660": _view("180,500")})
    got = {token: delta[LIVE]["quotes_rx_state_"] for token, delta in sockets.sent}
    # the tab's dict is whole: the earlier 005930 price stays next to the new one
    assert got["a1"] == {"005930": _view("70,100"), "000660": _view("180,500")}
    assert got["b1"] == {"000660": _view("180,500")}
    assert "far" not in got and "far" not in fan.tab_user  # its socket is another worker's


async def test_disconnected_tabs_are_forgotten_and_a_reused_token_changes_user():
    sockets = Sockets()
    app = SimpleNamespace(event_namespace=sockets)
    fan = LiveFanout()
    fan.set_rows(1, _rows("005930"), {})
    fan.watch("t1", 1)
    fan.follow_symbol("t1", "005930")
    # t1 never connected (or has gone): nothing is sent and the tab is dropped
    assert await fan.deliver(app, {"005930": _view("70,000")}) == 0
    assert fan.tab_user == {} and fan.symbol_tabs == {} and fan.users == {}

    fan.set_rows(1, _rows("005930"), {})
    fan.set_rows(2, _rows("000660"), {})
    fan.watch("t2", 1)
    fan.watch("t2", 2)  # signed out and in as someone else in the same tab
    sockets.connect("t2")
    await fan.deliver(app, {"005930": _view("70,000"), "000660": _view("180,000")})
    assert [set(d[LIVE]["quotes_rx_state_"]) for _, d in sockets.sent] == [{"000660"}]


async def test_a_broken_socket_does_not_stop_the_others():
    class Flaky(Sockets):
        async def emit_update(self, update: object, token: str) -> None:
            if token == "bad":
                raise ConnectionResetError("gone")
            await super().emit_update(update, token)

    sockets = Flaky()
    fan = LiveFanout()
    fan.set_rows(1, _rows("005930"), {})
    for token in ("bad", "good"):
        sockets.connect(token)
        fan.watch(token, 1)
    sent = await fan.deliver(SimpleNamespace(event_namespace=sockets), {"005930": _view("1")})
    assert sent == 1 and [t for t, _ in sockets.sent] == ["good"]


@pytest.mark.usefixtures("database")
async def test_a_symbol_goes_out_at_once_then_at_most_once_per_interval_with_its_latest_price():
    """Leading edge, then coalesced: three ticks inside one interval are one push of
    the last price; a symbol quiet for an interval goes out on its next tick."""
    await seed_symbols()
    bus = LocalLiveBus()
    pushes: list[tuple[float, dict]] = []

    async def listen() -> None:
        async for views in bus.quote_stream():
            pushes.append((asyncio.get_running_loop().time(), views))

    cfg = settings(ui_push_interval=0.3)
    path = ticks("005930", [70_000, 70_100, 70_200, 70_300, 70_400], start=T0)
    runner = Runner(cfg, ReplayMarket(path, SYMBOLS, prev_close={"005930": 69_000}), bus=bus)
    await runner.set_interest("chart:x", ["005930"])
    listener = asyncio.create_task(listen())
    loop_task = asyncio.create_task(runner._ui_loop())
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(0.05)
        start = loop.time()
        await runner.handle_tick(path[0])
        await asyncio.sleep(0.1)
        assert [v["005930"]["price"] for _, v in pushes] == ["70,000"]
        assert pushes[0][0] - start < 0.1  # at once, not after an interval
        for tick in path[1:4]:
            await runner.handle_tick(tick)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.4)
        assert [v["005930"]["price"] for _, v in pushes] == ["70,000", "70,300"]
        assert pushes[1][0] - pushes[0][0] >= 0.29  # not before the interval is over
        await asyncio.sleep(0.4)  # quiet for more than an interval
        before = loop.time()
        await runner.handle_tick(path[4])
        await asyncio.sleep(0.1)
        assert [v["005930"]["price"] for _, v in pushes][-1] == "70,400"
        assert pushes[-1][0] - before < 0.1
        assert len(pushes) == 3
    finally:
        for task in (listener, loop_task):
            task.cancel()
        await asyncio.gather(listener, loop_task, return_exceptions=True)
        await runner.market.close()


async def test_a_push_touches_only_the_users_watching_a_moved_symbol_and_rows_refresh():
    """The code index: 300 users on another symbol cost nothing when one moves; a user
    whose last tab closed leaves the index; rows re-read in one batch follow edits
    made elsewhere (here: straight in the database)."""
    sockets = Sockets()
    app = SimpleNamespace(event_namespace=sockets)
    fan = LiveFanout()
    for uid in range(1, 301):
        fan.set_rows(uid, _rows("000660"), {})
        fan.watch(f"t{uid}", uid)
        sockets.connect(f"t{uid}")
    fan.set_rows(999, _rows("005930"), {})
    fan.watch("mine", 999)
    sockets.connect("mine")
    assert fan.by_code["000660"] == set(range(1, 301))
    assert await fan.deliver(app, {"005930": _view("70,000")}) == 1
    del sockets.token_to_socket["mine"]
    await fan.deliver(app, {"005930": _view("70,100")})  # the closed tab is found and dropped
    assert "005930" not in fan.by_code and 999 not in fan.users
    fan.set_rows(5, _rows("000660", "005930"), {})
    assert fan.by_code["005930"] == {5}
    fan.set_rows(5, _rows("005930"), {})
    assert 5 not in fan.by_code["000660"] and fan.by_code["005930"] == {5}


@pytest.mark.usefixtures("database")
async def test_rows_are_reread_in_one_batch_and_tabless_users_are_dropped():
    from app import db
    from app.services import watchlist
    from tests.integration.helpers import make_user

    await seed_symbols()
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    fan = LiveFanout()
    fan.set_rows(alice.id, [], {})
    fan.watch("a", alice.id)
    fan.set_rows(bob.id, [], {})  # a watchlist edit here, bob's tabs are elsewhere
    async with db.session() as s:
        await watchlist.add(s, alice.id, "005930")
        await watchlist.add(s, alice.id, "000660")
    await fan.refresh_rows()
    assert [r["code"] for r in fan.users[alice.id].rows] == ["005930", "000660"]
    assert bob.id not in fan.users and fan.by_code["005930"] == {alice.id}
