"""The Telegram notifier against a loopback fake of the Bot API over real HTTP.

The fake parses Telegram-HTML like Telegram (and refuses what Telegram refuses),
enforces the per-chat and global rate limits, and records what arrived and when,
so these tests check the notifier's requests at the server: the exact payload,
the escaping and truncation, and how many messages landed in any one second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from notifiers.base import Delivered, Message, Notifier, PermanentFailure, Retryable
from notifiers.telegram import (
    InvalidBotToken,
    TelegramNotifier,
    TelegramUnavailable,
    render_text,
)
from tests.conftest import free_port
from tests.loopback import LoopbackServer
from tests.telegram_fake import TOKEN, TelegramFake, max_in_window, parse_telegram_html, utf16_len

log = logging.getLogger(__name__)
SECRET_PART = TOKEN.split(":", 1)[1]
CHAT = "123456789"


def msg(chat: str = CHAT, subject: str = "Alert", text: str = "body", key: str = "k1") -> Message:
    return Message(
        recipient=chat, subject=subject, text=text, html="<p>e-mail only</p>", idempotency_key=key
    )


@pytest.fixture
def tg() -> Iterator[tuple[TelegramFake, LoopbackServer]]:
    fake = TelegramFake(per_chat_limit=5, global_limit=20)
    server = fake.serve()
    try:
        yield fake, server
    finally:
        server.stop()


@pytest.fixture
async def make(
    tg: tuple[TelegramFake, LoopbackServer],
) -> AsyncIterator[Callable[..., TelegramNotifier]]:
    made: list[TelegramNotifier] = []

    def factory(**kw: object) -> TelegramNotifier:
        kw.setdefault("api_base", tg[1].base_url)
        kw.setdefault("timeout", 2.0)
        kw.setdefault("per_chat_per_s", 5.0)
        kw.setdefault("global_per_s", 20.0)
        token = str(kw.pop("bot_token", TOKEN))
        notifier = TelegramNotifier(token, **kw)  # type: ignore[arg-type]
        made.append(notifier)
        return notifier

    yield factory
    for notifier in made:
        await notifier.aclose()


@pytest.fixture
def fake(tg: tuple[TelegramFake, LoopbackServer]) -> TelegramFake:
    return tg[0]


# --- payload -------------------------------------------------------------------------


async def test_implements_the_protocol(make):
    notifier = make()
    assert isinstance(notifier, Notifier) and notifier.channel == "telegram"
    assert TOKEN not in repr(notifier)


async def test_success_sends_exactly_this_payload(make, fake: TelegramFake):
    result = await make().send(
        msg(subject="삼성전자 5% 상승", text="<script>alert(1)</script> & a < b > c")
    )
    assert result == Delivered(detail="1")
    (sent,) = fake.messages
    assert sent.payload == {
        "chat_id": 123456789,
        "text": "<b>삼성전자 5% 상승</b>\n"
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; a &lt; b &gt; c",
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
    }
    # What the user sees is exactly what we meant, and the e-mail html never went out.
    assert sent.visible == "삼성전자 5% 상승\n<script>alert(1)</script> & a < b > c"
    assert "e-mail only" not in sent.text


async def test_fake_refuses_what_telegram_refuses(tg):
    """Guard the guard: unescaped text and unknown tags are a 400 at the fake."""
    fake, server = tg
    url = f"{server.base_url}/bot{TOKEN}/sendMessage"
    async with httpx.AsyncClient() as client:
        cases = ["<script>x</script>", "a & b", "a < b", "<b>open", "<p>x</p>", "&nbsp;"]
        for text in cases:
            reply = await client.post(url, json={"chat_id": 1, "text": text, "parse_mode": "HTML"})
            assert reply.status_code == 400, text
            assert reply.json()["description"].startswith("Bad Request: can't parse entities")
        reply = await client.post(
            url, json={"chat_id": 1, "text": "x" * 4097, "parse_mode": "HTML"}
        )
        assert reply.json() == {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: message is too long",
        }
        reply = await client.post(url, json={"chat_id": 1, "text": "<b>ok</b> &amp; &#8364;"})
        assert reply.json()["description"] == "Bad Request: unsupported parse_mode"
    assert fake.messages == []
    assert parse_telegram_html('<b>ok</b> &amp; <a href="x">&#8364;</a>') == "ok & €"


async def test_long_text_is_cut_between_entities(make, fake: TelegramFake):
    result = await make().send(msg(subject="S", text="a&" * 2500))
    assert isinstance(result, Delivered)
    (sent,) = fake.messages
    # 4096 visible: "S\n" (2) + 4093 characters + the ellipsis; "&amp;" never split.
    assert sent.text == "<b>S</b>\n" + "a&amp;" * 2046 + "a…"
    assert utf16_len(sent.visible) == 4096
    assert sent.visible == "S\n" + ("a&" * 2500)[:4093] + "…"


async def test_truncation_counts_utf16_like_telegram(make, fake: TelegramFake):
    result = await make().send(msg(subject="S", text="😀" * 3000))
    assert isinstance(result, Delivered)
    (sent,) = fake.messages
    assert sent.visible == "S\n" + "😀" * 2046 + "…"
    assert utf16_len(sent.visible) == 4095  # one more emoji would be 4097


def test_render_text_edges():
    assert render_text("", "only text") == "only text"
    assert render_text("Head <1>", "") == "<b>Head &lt;1&gt;</b>"
    assert render_text("two\nlines", "x") == "<b>two lines</b>\nx"
    head = render_text("x" * 300, "body").split("\n")[0]
    assert head == "<b>" + "x" * 255 + "…</b>"
    assert render_text("", "") == ""


# --- outcomes ------------------------------------------------------------------------


async def test_429_propagates_retry_after_and_holds_the_chat(make, fake: TelegramFake):
    fake.force_429, fake.retry_after = 1, 3
    notifier = make(max_wait=1.0)
    result = await notifier.send(msg())
    assert result == Retryable("Telegram 429: Too Many Requests: retry after 3", retry_after=3.0)
    # The same chat is held back without asking Telegram again (longer than max_wait) ...
    again = await notifier.send(msg())
    assert isinstance(again, Retryable) and again.retry_after is not None
    assert 2.5 < again.retry_after <= 3.0
    assert again.reason == "chat is rate limited by Telegram"
    assert len(fake.send_arrivals(CHAT)) == 1
    # ... while another chat goes through.
    assert await notifier.send(msg(chat="42")) == Delivered(detail="1")


async def test_short_429_hold_is_waited_out_inside_send(make, fake: TelegramFake):
    fake.force_429, fake.retry_after = 1, 1
    notifier = make(max_wait=2.0)
    assert await notifier.send(msg()) == Retryable(
        "Telegram 429: Too Many Requests: retry after 1", retry_after=1.0
    )
    assert await notifier.send(msg()) == Delivered(detail="1")
    first, second = fake.send_arrivals(CHAT)
    assert second - first >= 1.0


async def test_5xx_is_retryable_then_delivers(make, fake: TelegramFake):
    fake.force_5xx = 1
    notifier = make()
    assert await notifier.send(msg()) == Retryable("Telegram 502: Bad Gateway")
    assert await notifier.send(msg()) == Delivered(detail="1")


async def test_permanent_failures_and_gone(make, fake: TelegramFake):
    fake.blocked.add("111")
    fake.unknown.add("222")
    notifier = make()
    assert await notifier.send(msg(chat="111")) == PermanentFailure(
        "Telegram 403: Forbidden: bot was blocked by the user", gone=True
    )
    assert await notifier.send(msg(chat="222")) == PermanentFailure(
        "Telegram 400: Bad Request: chat not found", gone=True
    )
    wrong = make(bot_token="987654321:" + "W" * 35)
    assert await wrong.send(msg()) == PermanentFailure(
        "Telegram rejected the bot token (401 Unauthorized)"
    )
    # Refused before any request: nothing Telegram could ever accept.
    before = len(fake.arrivals)
    assert await notifier.send(msg(chat="not a chat")) == PermanentFailure("not a Telegram chat id")
    assert await make(bot_token="").send(msg()) == PermanentFailure(
        "Telegram bot token is missing or malformed"
    )
    assert await notifier.send(msg(subject=" ", text=" ")) == PermanentFailure(
        "empty message: nothing to send"
    )
    assert len(fake.arrivals) == before
    assert fake.messages == []


async def test_timeout_and_connection_refused_are_retryable(make, fake: TelegramFake):
    fake.delay_s = 1.0
    started = time.monotonic()
    assert await make(timeout=0.3).send(msg()) == Retryable("Telegram timed out after 0.3s")
    assert time.monotonic() - started < 0.9
    down = make(api_base=f"http://127.0.0.1:{free_port()}")
    result = await down.send(msg())
    assert isinstance(result, Retryable) and result.reason.startswith("ConnectError")


async def test_token_never_in_logs_or_reasons(make, fake: TelegramFake, caplog):
    caplog.set_level(logging.DEBUG)
    notifier = make(timeout=0.3, max_wait=1.0)
    results = [await notifier.send(msg(chat="1"))]
    fake.force_429 = 1
    results.append(await notifier.send(msg(chat="2")))
    results.append(await notifier.send(msg(chat="2")))
    fake.force_5xx = 1
    results.append(await notifier.send(msg(chat="3")))
    fake.blocked.add("4")
    results.append(await notifier.send(msg(chat="4")))
    fake.delay_s = 0.5
    results.append(await notifier.send(msg(chat="5")))
    fake.delay_s = 0.0
    results.append(await make(api_base=f"http://127.0.0.1:{free_port()}").send(msg()))
    wrong_token = "987654321:" + "Q" * 35
    results.append(await make(bot_token=wrong_token).send(msg()))
    with pytest.raises(InvalidBotToken) as wrong:
        await make(bot_token=wrong_token).verify_token()
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Delivered", "Retryable", "Retryable", "Retryable", "PermanentFailure"] + [
        "Retryable",
        "Retryable",
        "PermanentFailure",
    ]
    # httpx logged the requests, with the token redacted.
    assert "/bot<redacted>/sendMessage" in caplog.text
    for secret in (TOKEN, SECRET_PART, wrong_token, "Q" * 35):
        assert secret not in caplog.text
        assert secret not in str(wrong.value)
        for result in results:
            assert secret not in repr(result)


# --- client-side rate limits, measured at the fake -----------------------------------


async def test_per_chat_limit_measured_at_the_fake(make, fake: TelegramFake):
    notifier = make(per_chat_per_s=5, global_per_s=20)
    started = time.monotonic()
    results = await asyncio.gather(*(notifier.send(msg(key=f"k{i}")) for i in range(12)))
    elapsed = time.monotonic() - started
    assert all(isinstance(r, Delivered) for r in results), results
    assert fake.rejected_429 == 0
    arrivals = fake.send_arrivals(CHAT)
    worst = max_in_window(arrivals, 1.0)
    log.warning("per chat 5/s: 12 messages in %.2f s, max %d in any 1 s", elapsed, worst)
    assert len(arrivals) == 12
    assert worst == 5  # never more, and the budget is used
    assert 2.0 <= elapsed < 4.0  # 5 + 5 + 2: two full windows of waiting


async def test_global_limit_measured_at_the_fake(make, fake: TelegramFake):
    notifier = make(per_chat_per_s=5, global_per_s=20)
    started = time.monotonic()
    results = await asyncio.gather(*(notifier.send(msg(chat=str(1000 + i))) for i in range(40)))
    elapsed = time.monotonic() - started
    assert all(isinstance(r, Delivered) for r in results), results
    assert fake.rejected_429 == 0
    arrivals = fake.send_arrivals()
    worst = max_in_window(arrivals, 1.0)
    log.warning("global 20/s: 40 chats in %.2f s, max %d in any 1 s", elapsed, worst)
    assert len(arrivals) == 40 and len({m.chat_id for m in fake.messages}) == 40
    assert worst == 20
    # Paced (at least a second) and not over-throttled (a limiter applying the 5/s chat
    # limit globally would need 8 s); the margin allows for the loaded CI session
    # (4.2 s there, 1.1 s alone).
    assert 1.0 <= elapsed < 6.0


async def test_fake_enforces_its_rate_limit_without_client_limiting(make, fake: TelegramFake):
    """Guard the guard: with the limiter wide open, the fake's 429s do come.

    ``max_wait=0``: a send that starts after the first 429 came back is held
    locally instead of waiting, so exactly the first window's 5 get through."""
    notifier = make(per_chat_per_s=1000, global_per_s=1000, max_wait=0.0)
    results = await asyncio.gather(*(notifier.send(msg(key=f"k{i}")) for i in range(12)))
    delivered = [r for r in results if isinstance(r, Delivered)]
    refused = [r for r in results if isinstance(r, Retryable)]
    assert len(delivered) == 5 and len(fake.messages) == 5 and len(refused) == 7
    assert fake.rejected_429 >= 1
    assert all(r.retry_after is not None and 0 < r.retry_after <= 1.0 for r in refused)


# --- getMe and getUpdates ------------------------------------------------------------


async def test_verify_token(make, fake: TelegramFake):
    assert await make().verify_token() == "tickwatch_test_bot"
    with pytest.raises(InvalidBotToken, match=r"does not accept this bot token \(401"):
        await make(bot_token="987654321:" + "W" * 35).verify_token()
    before = len(fake.arrivals)
    with pytest.raises(InvalidBotToken, match="not of the form id:secret"):
        await make(bot_token="not-a-token/../x").verify_token()
    assert len(fake.arrivals) == before
    with pytest.raises(TelegramUnavailable, match="ConnectError"):
        await make(api_base=f"http://127.0.0.1:{free_port()}").verify_token()


async def test_updates_with_code_finds_the_chat(make, fake: TelegramFake):
    fake.push_start(555, "abc123")
    fake.push_start(777, "other")
    fake.push_start(888, "", text="hello abc123")
    fake.push_start(-1001234567890, "", text="/start@tickwatch_test_bot grp-9")
    notifier = make()
    assert await notifier.updates_with_code("abc123") == "555"
    assert await notifier.updates_with_code("grp-9") == "-1001234567890"
    assert await notifier.updates_with_code("abc12") is None
    assert await notifier.updates_with_code("nope") is None
    assert len(fake.updates) == 4  # read, never confirmed: other codes stay pending
    with pytest.raises(ValueError, match="linking code"):
        await notifier.updates_with_code("a b")


# --- the limiter itself, in virtual time ----------------------------------------------


class VirtualClock:
    """Time that moves only when someone sleeps (one waiter sleeps at a time)."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


async def test_window_limiter_rates_in_virtual_time():
    from notifiers.ratelimit import Holdoff, WindowLimiter

    clock = VirtualClock()
    slow = WindowLimiter(0.5, clock=clock.monotonic, sleep=clock.sleep)
    assert (slow.count, slow.window) == (1, 2.0)
    starts = []
    for _ in range(3):
        async with slow.slot():
            starts.append(clock.t)
            clock.t += 0.25  # the request takes this long; its window starts after it
    assert starts == [0.0, 2.25, 4.5]
    clock.t = 0.0
    fast = WindowLimiter(3, clock=clock.monotonic, sleep=clock.sleep)
    starts = []
    for _ in range(7):
        async with fast.slot():
            starts.append(clock.t)
    assert starts == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0]
    hold = Holdoff(clock.monotonic)
    hold.hold("a", 3.0)
    hold.hold("a", 1.0)  # a shorter hold never shortens a longer one
    assert hold.remaining("a") == 3.0 and hold.remaining("b") == 0.0
    clock.t += 3.0
    assert hold.remaining("a") == 0.0
