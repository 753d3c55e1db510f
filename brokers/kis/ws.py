"""One KIS realtime websocket session: one connection, one approval key, <= 40 subscriptions.

KIS allows one session per app key and about 40 subscriptions per session, counted
across all TRs, so a session is a scarce resource that the stream (``stream.py``)
spreads symbols over. This class deals with exactly one connection's life; it does
not reconnect. When the connection ends, :meth:`wait_closed` returns why, and the
stream decides how long to back off and whether a new approval key is needed.

Protocol points that shape the code:

* ``ping_interval=None``: KIS drops clients whose library sends websocket pings.
  Liveness is KIS's own PINGPONG: a JSON text whose ``header.tr_id`` is
  ``PINGPONG``, which we echo back verbatim as a text frame.
* Subscribe / unsubscribe are JSON text frames carrying the approval key; KIS
  answers each with a JSON reply keyed by ``tr_id``/``tr_key``. We wait for that
  reply (one request in flight at a time, as the official samples do) so the
  caller learns the real outcome instead of assuming success.
* Reply codes: ``OPSP0000`` subscribed, ``OPSP0001`` unsubscribed, ``OPSP0002``
  already subscribed (treated as subscribed), ``OPSP0003`` not subscribed (treated
  as unsubscribed), ``OPSP8996`` app key in use by another session
  (:class:`AppKeyInUse`: the session is useless, close it and back off long),
  ``OPSP0008`` / ``MAX SUBSCRIBE OVER`` over the limit (:class:`SubscriptionRefused`;
  the code is (unconfirmed), so the text is checked too). A reply that complains
  about the approval key (``OPSP0011`` "invalid approval", or any message naming
  "approval" (unconfirmed)) raises :class:`ApprovalRejected`: only a new key helps.
* Execution notices arrive encrypted; the key/iv come in their subscribe reply and
  are kept per TR for this connection only.

Callbacks (``on_tick``, ``on_notice``) are plain functions called from the reader
task; they must not block (the stream only puts into queues).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date

import websockets
from websockets.asyncio.client import ClientConnection, connect

from brokers.base import AuthExpired, BrokerError, BrokerUnavailable, Fill
from brokers.kis.auth import ApprovalKey
from brokers.kis.frames import (
    FIELD_COUNTS,
    NOTICE_TR_IDS,
    TRADE_TR_ID,
    ControlMessage,
    DataFrame,
    FrameError,
    parse_message,
    trade_ticks,
)
from brokers.kis.notices import NoticeCipher, OrderNotice, notice_events
from engines.market import Tick

__all__ = [
    "DEFAULT_MAX_SUBSCRIPTIONS",
    "AppKeyInUse",
    "ApprovalRejected",
    "KisSession",
    "SessionClosed",
    "SubscriptionRefused",
    "decode",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_SUBSCRIPTIONS = 40

SUBSCRIBED, UNSUBSCRIBED, ALREADY_SUBSCRIBED, NOT_SUBSCRIBED = (
    "OPSP0000",
    "OPSP0001",
    "OPSP0002",
    "OPSP0003",
)
OVER_LIMIT = "OPSP0008"
APP_KEY_IN_USE = "OPSP8996"
INVALID_APPROVAL = "OPSP0011"


class SubscriptionRefused(BrokerError):
    """One subscription was refused (our local limit, KIS's limit, or another reason).

    Not retried automatically: a full session stays full until something is
    unsubscribed, and retrying in a loop is what gets app keys blocked.
    """

    def __init__(self, tr_id: str, tr_key: str, reason: str, *, over_limit: bool) -> None:
        super().__init__(f"{tr_id}/{tr_key}: {reason}")
        self.tr_id, self.tr_key, self.reason, self.over_limit = tr_id, tr_key, reason, over_limit


class AppKeyInUse(BrokerUnavailable):
    """OPSP8996: another session holds this app key. Back off longer than for a drop:
    the other session (or KIS's memory of our previous one) has to go away first."""


class ApprovalRejected(AuthExpired):
    """KIS refused the approval key; a fresh one must be requested before reconnecting."""


class SessionClosed(BrokerUnavailable):
    """The connection ended (dropped, closed by KIS, or closed by us)."""


@dataclass(frozen=True, slots=True)
class _Request:
    tr_type: str
    tr_id: str
    tr_key: str


def _msg(text: str) -> str:
    return text.strip()[:80]


class KisSession:
    """One websocket connection to KIS. Use ``await open()`` then subscribe; read
    events through the callbacks; ``await wait_closed()`` tells why it ended."""

    def __init__(
        self,
        url: str,
        approval_key: ApprovalKey,
        *,
        on_tick: Callable[[Tick], None],
        on_notice: Callable[[Fill | OrderNotice], None] | None = None,
        session_date: Callable[[], date],
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
        reply_timeout: float = 10.0,
        open_timeout: float = 10.0,
        name: str = "kis-ws",
    ) -> None:
        if max_subscriptions < 1:
            raise ValueError(f"max_subscriptions must be >= 1, got {max_subscriptions}")
        self.url = url
        self.name = name
        self.max_subscriptions = max_subscriptions
        self._approval = approval_key
        self._on_tick = on_tick
        self._on_notice = on_notice
        self._session_date = session_date
        self._reply_timeout = reply_timeout
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subs: dict[tuple[str, str], None] = {}
        self._ciphers: dict[str, NoticeCipher] = {}
        self._request_lock = asyncio.Lock()
        self._pending: tuple[_Request, asyncio.Future[ControlMessage]] | None = None
        self._closed = asyncio.Event()
        self.failure: BrokerError | None = None
        self.pingpongs = 0
        self.frames = 0

    # ---- lifecycle --------------------------------------------------------------
    async def open(self) -> None:
        """Connect. Raises :class:`BrokerUnavailable` if KIS cannot be reached."""
        try:
            self._ws = await connect(
                self.url,
                ping_interval=None,  # KIS drops clients that send websocket pings
                open_timeout=self._open_timeout,
                close_timeout=2,
                compression=None,
                max_size=2**20,
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise BrokerUnavailable(f"KIS websocket unreachable: {type(exc).__name__}") from exc
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-reader")

    async def close(self) -> None:
        """Close our side; idempotent. Sets ``failure`` to a :class:`SessionClosed` if unset."""
        self._fail(SessionClosed("closed by us"))
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 3)
        self._closed.set()

    async def wait_closed(self) -> BrokerError:
        """Wait until the connection ends; return the reason."""
        await self._closed.wait()
        return self.failure or SessionClosed("closed")

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set() or self.failure is not None

    @property
    def connection(self) -> ClientConnection | None:
        """The underlying connection, for diagnostics (tests check ``ping_interval``)."""
        return self._ws

    @property
    def subscriptions(self) -> frozenset[tuple[str, str]]:
        """``(tr_id, tr_key)`` pairs KIS confirmed on this connection."""
        return frozenset(self._subs)

    @property
    def free(self) -> int:
        return self.max_subscriptions - len(self._subs)

    # ---- subscriptions ----------------------------------------------------------
    async def subscribe(self, tr_id: str, tr_key: str) -> str:
        """Subscribe and wait for KIS's reply; return its ``msg_cd``.

        Raises :class:`SubscriptionRefused` (limit or other refusal),
        :class:`AppKeyInUse` / :class:`ApprovalRejected` (the session is then
        closed), or :class:`SessionClosed`.
        """
        key = (tr_id, tr_key)
        async with self._request_lock:
            if key not in self._subs and len(self._subs) >= self.max_subscriptions:
                raise SubscriptionRefused(
                    tr_id,
                    tr_key,
                    f"local limit of {self.max_subscriptions} subscriptions per session",
                    over_limit=True,
                )
            reply = await self._request(_Request("1", tr_id, tr_key))
            code = reply.msg_cd
            if code in (SUBSCRIBED, ALREADY_SUBSCRIBED) or (reply.ok and code != OVER_LIMIT):
                self._subs[key] = None
                if tr_id in NOTICE_TR_IDS:
                    self._keep_cipher(tr_id, reply)
                log.debug("%s: %s/%s subscribed (%s)", self.name, tr_id, tr_key, code)
                return code
            await self._refusal(reply, tr_id, tr_key)
            raise AssertionError("unreachable")  # pragma: no cover

    async def unsubscribe(self, tr_id: str, tr_key: str) -> str:
        """Unsubscribe; ``OPSP0003`` (not subscribed) counts as done. Returns ``msg_cd``."""
        async with self._request_lock:
            reply = await self._request(_Request("2", tr_id, tr_key))
            code = reply.msg_cd
            if code in (UNSUBSCRIBED, NOT_SUBSCRIBED) or reply.ok:
                self._subs.pop((tr_id, tr_key), None)
                if tr_id in NOTICE_TR_IDS:
                    self._ciphers.pop(tr_id, None)
                return code
            await self._refusal(reply, tr_id, tr_key)
            raise AssertionError("unreachable")  # pragma: no cover

    async def _refusal(self, reply: ControlMessage, tr_id: str, tr_key: str) -> None:
        code, text = reply.msg_cd, _msg(reply.msg1)
        upper = text.upper()
        if code == APP_KEY_IN_USE:
            log.warning(
                "%s: KIS says the app key is in use by another session (%s)", self.name, code
            )
            error: BrokerError = AppKeyInUse(f"{code} {text}")
            await self._abort(error)
            raise error
        if code == INVALID_APPROVAL or "APPROVAL" in upper:
            log.warning("%s: KIS refused the approval key (%s)", self.name, code)
            error = ApprovalRejected(f"{code} {text}")
            await self._abort(error)
            raise error
        over = code == OVER_LIMIT or "MAX SUBSCRIBE" in upper
        log.warning("%s: KIS refused %s/%s: %s %s", self.name, tr_id, tr_key, code, text)
        raise SubscriptionRefused(tr_id, tr_key, f"{code} {text}".strip(), over_limit=over)

    def _keep_cipher(self, tr_id: str, reply: ControlMessage) -> None:
        if not reply.key or not reply.iv:
            log.warning("%s: %s subscribe reply carried no key/iv", self.name, tr_id)
            return
        try:
            self._ciphers[tr_id] = NoticeCipher(reply.key, reply.iv)
        except FrameError as exc:
            log.warning("%s: %s key/iv unusable: %s", self.name, tr_id, exc.reason)

    async def _request(self, request: _Request) -> ControlMessage:
        if self._ws is None or self.is_closed:
            raise self.failure or SessionClosed("not connected")
        message = json.dumps(
            {
                "header": {
                    "approval_key": self._approval.value,
                    "custtype": "P",
                    "tr_type": request.tr_type,
                    "content-type": "utf-8",
                },
                "body": {"input": {"tr_id": request.tr_id, "tr_key": request.tr_key}},
            },
            separators=(",", ":"),
        )
        future: asyncio.Future[ControlMessage] = asyncio.get_running_loop().create_future()
        self._pending = (request, future)
        try:
            try:
                await self._ws.send(message)
            except websockets.exceptions.ConnectionClosed as exc:
                self._fail(SessionClosed(f"connection closed while sending ({exc.rcvd})"))
                raise self.failure or SessionClosed("closed") from None
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                done, _ = await asyncio.wait(
                    {future, closed},
                    timeout=self._reply_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                closed.cancel()
            if future in done:
                return future.result()
            if self.is_closed:
                raise self.failure or SessionClosed("closed")
            # No reply: we no longer know this connection's subscription state, so
            # the only safe course is a fresh connection (the stream resubscribes).
            error = SessionClosed(f"no reply to {request.tr_id} within {self._reply_timeout}s")
            await self._abort(error)
            raise error
        finally:
            self._pending = None

    async def _abort(self, error: BrokerError) -> None:
        self._fail(error)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._closed.set()

    def _fail(self, error: BrokerError) -> None:
        if self.failure is None:
            self.failure = error

    # ---- reading ----------------------------------------------------------------
    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                try:
                    await self._handle(message)
                except Exception:  # a bug in handling one message must not end the session
                    log.exception("%s: failed to handle a message", self.name)
            self._fail(SessionClosed("closed by KIS"))
        except websockets.exceptions.ConnectionClosed as exc:
            self._fail(SessionClosed(f"connection lost ({type(exc).__name__})"))
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._fail(SessionClosed(f"connection lost ({type(exc).__name__})"))
        finally:
            self._closed.set()

    async def _handle(self, message: str | bytes) -> None:
        decoded = decode(message, self._session_date(), self._ciphers)
        if isinstance(decoded, list):
            self.frames += 1
            for event in decoded:
                if isinstance(event, Tick):
                    self._on_tick(event)
                elif self._on_notice is not None:
                    self._on_notice(event)
            return
        if decoded is None:
            return
        if decoded.is_pingpong:
            # Echo the exact text as a text frame: what the official samples do.
            assert self._ws is not None
            text = message if isinstance(message, str) else decoded.raw
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await self._ws.send(text)
                self.pingpongs += 1
            return
        pending = self._pending
        if pending is not None and not pending[1].done():
            request, future = pending
            if decoded.tr_id == request.tr_id and decoded.tr_key in ("", request.tr_key):
                future.set_result(decoded)
                return
        log.debug("%s: unsolicited control message %s %s", self.name, decoded.tr_id, decoded.msg_cd)


def decode(
    message: str | bytes, session_date: date, ciphers: Mapping[str, NoticeCipher]
) -> ControlMessage | list[Tick | Fill | OrderNotice] | None:
    """Everything one websocket message means; never raises.

    A control message is returned as such; a data frame becomes its events (ticks,
    fills, order acknowledgements), ``[]`` when rejected; ``None`` means the
    message itself was malformed. Every rejection is logged with its reason.
    """
    parsed = parse_message(message)
    if not isinstance(parsed, DataFrame):
        return parsed
    if parsed.tr_id == TRADE_TR_ID:
        return list(trade_ticks(parsed, session_date))
    if parsed.tr_id in NOTICE_TR_IDS:
        return list(notice_events(parsed, ciphers.get(parsed.tr_id), session_date))
    if parsed.tr_id in FIELD_COUNTS:
        log.debug("ignoring data frame of unhandled TR %s", parsed.tr_id)
    else:
        log.warning("KIS websocket frame rejected: unknown tr_id %r", parsed.tr_id)
    return []
