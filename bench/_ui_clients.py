"""Browser-like Reflex clients for ``python -m bench ui``, speaking Socket.IO by hand.

A browser tab opening ``/`` does, in Reflex 0.10.1 (``reflex_base/.templates/web/utils/
state.js`` and ``reflex/app.py`` ``EventNamespace``):

1. opens ``/_event/?EIO=4&transport=websocket&token=<tab token>``: the backend links the
   socket to the tab's state by the ``token`` query parameter (without it every event is
   dropped with "no associated token"), and captures the handshake's headers, the
   HttpOnly ``tw_session`` cookie among them, for ``router.headers``;
2. answers Engine.IO's open packet ``0{...}`` by joining the **``/_event`` namespace**
   (not the default one): ``40/_event,{"event": <hydrate_and_load>}``. The boot event
   rides in the CONNECT packet's auth, as the frontend sends it; the backend hydrates
   and then runs the page's ``on_load`` chain (``SessionState.guard``,
   ``LiveState.connect``) itself, server side;
3. receives ``42/_event,["event", {"delta": ...}]`` state updates and answers the
   server's ping ``2`` with ``3``.

Doing it with ``websockets`` keeps the client cheap: the machine has two cores, shared
with the backend under test, and a real browser per tab would measure the browsers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("bench.ui.clients")

NAMESPACE = "/_event"
EVENT_PREFIX = f"42{NAMESPACE},"
CONNECT_PREFIX = f"40{NAMESPACE}"
CONNECT_ERROR_PREFIX = f"44{NAMESPACE}"
DISCONNECT_PREFIX = f"41{NAMESPACE}"
HYDRATE_AND_LOAD = "reflex___state____state.hydrate_and_load"
LIVE_STATE_SUFFIX = "live____live_state"
QUOTES_VAR = "quotes_rx_state_"
WATCH_ROWS_VAR = "watch_rows_rx_state_"
SESSION_COOKIE = "tw_session"


def boot_event(path: str = "/") -> dict[str, Any]:
    """The frontend's ``initialEvents(first)`` without the initial-state hashes.

    A first visit sends hashes of the compiled defaults so the backend can skip
    unchanged vars; we have no compiled frontend, so we get the full state, as a
    browser's reconnect does.
    """
    return {
        "name": HYDRATE_AND_LOAD,
        "payload": {},
        "router_data": {"pathname": path, "asPath": path},
    }


@dataclass
class Window:
    """The measured interval in wall-clock seconds; the bench moves it, clients read it."""

    start: float = math.inf
    end: float = math.inf
    stopping: bool = False
    """Set before the bench closes the sockets: a close after this is not an error."""

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass
class Tally:
    """Everything every client measured, merged: one loop, so plain shared objects."""

    latencies_ms: list[float] = field(default_factory=list)
    newest_ms: list[float] = field(default_factory=list)
    """Per message, the latency of its newest quote: the trade printed at the last market
    step before the push, so this is the delivery time plus at most one tick interval,
    without the age that coalescing adds to quotes of symbols that traded earlier."""
    updates: int = 0
    """Messages in the window that carried at least one quote with a new ``at``."""
    resent_quotes: int = 0
    """Quotes repeated unchanged in a message (the whole dict is sent on each push)."""
    symbols_seen: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class ReflexClient:
    """One browser tab of one signed-in user, on the watchlist page."""

    url: str
    origin: str
    session_token: str
    window: Window
    tally: Tally
    linked: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once ``LiveState.connect`` ran: the tab's watch rows arrived."""
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    receiving: bool = False
    """A fresh quote reached this tab inside the window."""
    last_at: dict[str, str] = field(default_factory=dict)

    def _error(self, kind: str) -> None:
        self.tally.errors[kind] += 1
        self.failed.set()
        log.warning("client error: %s", kind)

    async def run(self, connect_slots: asyncio.Semaphore) -> None:
        """Connect, hydrate, then read updates until cancelled or the socket drops."""
        try:
            async with connect_slots:
                ws = await websockets.connect(
                    self.url,
                    origin=self.origin,  # type: ignore[arg-type]
                    additional_headers={"Cookie": f"{SESSION_COOKIE}={self.session_token}"},
                    user_agent_header="bench-ui",
                    max_size=None,
                    ping_interval=None,  # Engine.IO pings at its own level; browsers do not
                    open_timeout=60,
                )
                await self._handshake(ws)
            async with ws:
                await self._read(ws)
        except asyncio.CancelledError:
            raise
        except ConnectionClosed:
            if not self.window.stopping:
                self._error("disconnected")
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            if not self.window.stopping:
                self._error(f"connect:{type(exc).__name__}")
        except (ValueError, KeyError, TypeError) as exc:
            self._error(f"protocol:{type(exc).__name__}")

    async def _handshake(self, ws: websockets.ClientConnection) -> None:
        opened = await ws.recv()
        if not isinstance(opened, str) or not opened.startswith("0"):
            raise ValueError(f"expected the Engine.IO open packet, got {opened!r:.80}")
        json.loads(opened[1:])  # sid, pingInterval, maxPayload: nothing to act on
        await ws.send(f"{CONNECT_PREFIX}," + json.dumps({"event": boot_event("/")}))

    async def _read(self, ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            received = time.time()
            if not isinstance(raw, str):
                self._error("protocol:binary")
                continue
            if raw.startswith(EVENT_PREFIX):
                self._on_event(json.loads(raw[len(EVENT_PREFIX) :]), received)
            elif raw == "2":
                await ws.send("3")
            elif raw.startswith(CONNECT_PREFIX):
                continue  # the namespace's connect acknowledgement
            elif raw.startswith(CONNECT_ERROR_PREFIX):
                self._error("connect_refused")
                return
            elif raw.startswith(DISCONNECT_PREFIX) or raw == "1":
                if not self.window.stopping:
                    self._error("server_disconnect")
                return
            else:
                self._error("protocol:unexpected_packet")

    def _on_event(self, message: list[Any], received: float) -> None:
        if not (isinstance(message, list) and len(message) == 2 and message[0] == "event"):
            self._error("protocol:bad_event")
            return
        update = message[1]
        for event in update.get("events") or ():
            if event.get("name") == "_redirect":
                # SessionState.guard sends a tab without a valid session to /login.
                self._error("redirected:" + str(event.get("payload", {}).get("path")))
        for name, substate in (update.get("delta") or {}).items():
            if name.endswith(LIVE_STATE_SUFFIX):
                self._on_live(substate, received)

    def _on_live(self, live: dict[str, Any], received: float) -> None:
        if live.get(WATCH_ROWS_VAR):
            self.linked.set()
        quotes = live.get(QUOTES_VAR)
        if not quotes:
            return
        in_window = self.window.contains(received)
        fresh = 0
        newest = 0
        for code, view in quotes.items():
            at = view.get("at", "")
            if not at or self.last_at.get(code) == at:
                if in_window:
                    self.tally.resent_quotes += 1
                continue
            self.last_at[code] = at
            if in_window:
                fresh += 1
                newest = max(newest, int(at))
                self.tally.latencies_ms.append(received * 1000 - int(at))
                self.tally.symbols_seen.add(code)
        if fresh:
            self.tally.updates += 1
            self.tally.newest_ms.append(received * 1000 - newest)
            self.receiving = True


async def loop_lag(window: Window, out: list[float], every: float = 0.05) -> None:
    """How late this event loop wakes up: receive times are stamped on this loop, so a
    busy client loop would show up as latency; this says how much of it is ours."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(every)
        late = (loop.time() - t - every) * 1000
        if window.contains(time.time()):
            out.append(max(0.0, late))
