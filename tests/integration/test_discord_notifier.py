"""The Discord notifier against a loopback fake of Discord's webhook API over real HTTP.

The fake validates bodies like Discord, keeps a rate-limit bucket per webhook and
announces it in the real headers, and records what arrived and when, so these
tests check the notifier at the server: the exact embed, that no 429 is ever
provoked once a bucket is announced empty, and that no request leaves for a host
other than Discord's (SSRF).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from notifiers.base import Delivered, Message, Notifier, PermanentFailure, Retryable
from notifiers.discord import DiscordNotifier, validate_webhook_url, webhook_key
from tests.conftest import free_port
from tests.discord_fake import DiscordFake
from tests.loopback import LoopbackServer

log = logging.getLogger(__name__)
HOOK_ID = "123456789012345678"
HOOK_TOKEN = "SeCrEtWebhookToken_abc-" + "x" * 45
OTHER_ID = "223456789012345678"
OTHER_TOKEN = "AnotherSecretToken_" + "y" * 49
FIXED_NOW = datetime(2026, 3, 5, 2, 0, 30, tzinfo=UTC)


def msg(url: str, subject: str = "Alert", text: str = "body", key: str = "k1") -> Message:
    return Message(
        recipient=url, subject=subject, text=text, html="<p>e-mail only</p>", idempotency_key=key
    )


@pytest.fixture
def dc() -> Iterator[tuple[DiscordFake, LoopbackServer]]:
    fake = DiscordFake(limit=5, window=2.0)
    fake.add_webhook(HOOK_ID, HOOK_TOKEN)
    fake.add_webhook(OTHER_ID, OTHER_TOKEN)
    server = fake.serve()
    try:
        yield fake, server
    finally:
        server.stop()


@pytest.fixture
def fake(dc: tuple[DiscordFake, LoopbackServer]) -> DiscordFake:
    return dc[0]


@pytest.fixture
def url(dc: tuple[DiscordFake, LoopbackServer]) -> str:
    return f"{dc[1].base_url}/api/webhooks/{HOOK_ID}/{HOOK_TOKEN}"


@pytest.fixture
def other_url(dc: tuple[DiscordFake, LoopbackServer]) -> str:
    return f"{dc[1].base_url}/api/webhooks/{OTHER_ID}/{OTHER_TOKEN}"


@pytest.fixture
async def make(
    dc: tuple[DiscordFake, LoopbackServer],
) -> AsyncIterator[Callable[..., DiscordNotifier]]:
    made: list[DiscordNotifier] = []

    def factory(**kw: object) -> DiscordNotifier:
        kw.setdefault("api_base", dc[1].base_url)
        kw.setdefault("timeout", 2.0)
        kw.setdefault("now", lambda: FIXED_NOW)
        notifier = DiscordNotifier(**kw)  # type: ignore[arg-type]
        made.append(notifier)
        return notifier

    yield factory
    for notifier in made:
        await notifier.aclose()


# --- payload -------------------------------------------------------------------------


async def test_implements_the_protocol(make):
    notifier = make()
    assert isinstance(notifier, Notifier) and notifier.channel == "discord"


async def test_success_sends_exactly_this_embed(make, fake: DiscordFake, url: str):
    result = await make().send(
        msg(url, subject="삼성전자 @everyone 5% 상승", text="<@123> **72,000원** & a < b")
    )
    assert result == Delivered(detail="1200000000000000000")  # ?wait=true: the message id
    (posted,) = fake.posted
    assert posted.webhook_id == HOOK_ID
    assert posted.payload == {
        "content": "",
        "embeds": [
            {
                "title": "삼성전자 @everyone 5% 상승",
                "description": "<@123> **72,000원** & a < b",
                "color": 0x3B82F6,
                "timestamp": "2026-03-05T02:00:30.000+00:00",
            }
        ],
        "allowed_mentions": {"parse": []},  # nobody is pinged by user text
    }


async def test_long_subject_and_text_are_truncated_to_embed_limits(
    make, fake: DiscordFake, url: str
):
    result = await make().send(msg(url, subject="T" * 300, text="😀" * 3000))
    assert isinstance(result, Delivered)
    (embed,) = fake.posted[0].payload["embeds"]
    assert embed["title"] == "T" * 255 + "…"
    assert embed["description"] == "😀" * 2047 + "…"  # 4095 UTF-16 units
    assert len(embed["description"].encode("utf-16-le")) // 2 == 4095


async def test_fake_refuses_oversized_embeds(dc, url: str):
    """Guard the guard: the fake answers 400 where Discord does."""
    fake, _ = dc
    async with httpx.AsyncClient() as client:
        too_long = {"embeds": [{"title": "t" * 257}]}
        reply = await client.post(url, params={"wait": "true"}, json=too_long)
        assert reply.status_code == 400 and reply.json()["code"] == 50035
        too_big = {"embeds": [{"description": "d" * 4000}, {"description": "d" * 2001}]}
        reply = await client.post(url, json=too_big)
        assert reply.status_code == 400 and "MAX_EMBED_SIZE_EXCEEDED" in reply.text
        reply = await client.post(url, json={"content": "", "embeds": []})
        assert reply.json() == {"message": "Cannot send an empty message", "code": 50006}
    assert fake.posted == []


# --- outcomes ------------------------------------------------------------------------


async def test_429_propagates_retry_after(make, fake: DiscordFake, url: str, other_url: str):
    fake.force_429, fake.force_429_retry_after = 1, 1.5
    notifier = make(max_wait=1.0)
    assert await notifier.send(msg(url)) == Retryable(
        "Discord 429 (webhook): You are being rate limited.", retry_after=1.5
    )
    # Held back without asking again (1.5 s + margin is more than max_wait) ...
    again = await notifier.send(msg(url))
    assert isinstance(again, Retryable) and again.retry_after is not None
    assert 1.4 < again.retry_after <= 1.55
    assert len(fake.hits) == 1
    # ... while another webhook (another bucket) goes through.
    assert isinstance(await notifier.send(msg(other_url)), Delivered)


async def test_429_header_only_and_global(make, fake: DiscordFake, url: str, other_url: str):
    fake.force_429, fake.force_429_json = 1, False
    notifier = make(max_wait=1.0)
    assert await notifier.send(msg(url)) == Retryable(
        "Discord 429 (webhook): Too Many Requests", retry_after=2.0
    )
    fake.force_429, fake.force_429_json, fake.force_429_global = 1, True, True
    assert await notifier.send(msg(other_url)) == Retryable(
        "Discord 429 (global): You are being rate limited.", retry_after=1.5
    )
    hits = len(fake.hits)
    # A global limit holds every webhook.
    held = await make(max_wait=1.0).send(msg(other_url))
    assert isinstance(held, Delivered)  # a fresh notifier knows of no hold ...
    held = await notifier.send(msg(other_url))
    assert isinstance(held, Retryable) and held.reason == "Discord webhook is rate limited"
    assert len(fake.hits) == hits + 1  # ... and the held one asked nobody


async def test_5xx_is_retryable(make, fake: DiscordFake, url: str):
    fake.force_5xx = 1
    notifier = make()
    assert await notifier.send(msg(url)) == Retryable("Discord 503: Service Unavailable (0)")
    assert isinstance(await notifier.send(msg(url)), Delivered)


async def test_permanent_failures_and_gone(make, fake: DiscordFake, dc):
    base = dc[1].base_url
    notifier = make()
    deleted = f"{base}/api/webhooks/999999999999999999/{HOOK_TOKEN}"
    assert await notifier.send(msg(deleted)) == PermanentFailure(
        "Discord 404: Unknown Webhook (10015)", gone=True
    )
    wrong_token = f"{base}/api/webhooks/{HOOK_ID}/WrongToken"
    assert await notifier.send(msg(wrong_token)) == PermanentFailure(
        "Discord 401: Invalid Webhook Token (50027)"
    )
    bad_color = make(color=0x1000000)
    good = f"{base}/api/webhooks/{HOOK_ID}/{HOOK_TOKEN}"
    assert await bad_color.send(msg(good)) == PermanentFailure(
        "Discord 400: Invalid Form Body (50035)"
    )
    assert await notifier.send(msg(good, subject=" ", text="")) == PermanentFailure(
        "empty message: nothing to send"
    )
    assert fake.posted == []


async def test_timeout_and_connection_refused_are_retryable(make, fake: DiscordFake, url: str):
    fake.delay_s = 1.0
    started = time.monotonic()
    assert await make(timeout=0.3).send(msg(url)) == Retryable("Discord timed out after 0.3s")
    assert time.monotonic() - started < 0.9
    base = f"http://127.0.0.1:{free_port()}"
    down = make(api_base=base)
    result = await down.send(msg(f"{base}/api/webhooks/{HOOK_ID}/{HOOK_TOKEN}"))
    assert isinstance(result, Retryable) and result.reason.startswith("ConnectError")


# --- SSRF ----------------------------------------------------------------------------


async def test_send_revalidates_and_never_posts_elsewhere(make, fake: DiscordFake, url: str):
    """A stored URL on another host (here a second, live fake) is refused unsent."""
    evil = DiscordFake()
    evil.add_webhook(HOOK_ID, HOOK_TOKEN)
    evil_server = evil.serve()
    try:
        evil_url = f"{evil_server.base_url}/api/webhooks/{HOOK_ID}/{HOOK_TOKEN}"
        notifier = make()
        for target in (
            evil_url,
            url.replace("http://", "http://user@"),
            url + "/../../other",
            url + "?wait=false",
        ):
            result = await notifier.send(msg(target))
            assert isinstance(result, PermanentFailure) and not result.gone, target
            assert result.reason.startswith("webhook URL rejected: "), result
            assert HOOK_TOKEN not in result.reason
        assert evil.hits == [] and fake.hits == []
    finally:
        evil_server.stop()


GOOD = [
    (
        "https://discord.com/api/webhooks/123456789012345678/SeCrEt_abc-DEF",
        "https://discord.com/api/webhooks/123456789012345678/SeCrEt_abc-DEF",
    ),
    (
        "https://discordapp.com/api/webhooks/1/SeCrEt",
        "https://discordapp.com/api/webhooks/1/SeCrEt",
    ),
    (
        "https://canary.discord.com/api/webhooks/1/SeCrEt",
        "https://canary.discord.com/api/webhooks/1/SeCrEt",
    ),
    (
        "https://ptb.discord.com/api/webhooks/1/SeCrEt",
        "https://ptb.discord.com/api/webhooks/1/SeCrEt",
    ),
    ("HTTPS://Discord.COM/api/webhooks/1/SeCrEt/", "https://discord.com/api/webhooks/1/SeCrEt"),
    ("http://127.0.0.1:8123/api/webhooks/1/SeCrEt", "http://127.0.0.1:8123/api/webhooks/1/SeCrEt"),
]

BAD = [
    ("", "empty"),
    ("http://discord.com/api/webhooks/1/SeCrEt", "https://"),
    ("javascript:alert(1)//discord.com/api/webhooks/1/SeCrEt", "https://"),
    ("https://evil.example/api/webhooks/1/SeCrEt", "on discord.com"),
    ("https://discord.com.evil.example/api/webhooks/1/SeCrEt", "on discord.com"),
    ("https://evildiscord.com/api/webhooks/1/SeCrEt", "on discord.com"),
    ("https://discord.com:8443/api/webhooks/1/SeCrEt", "on discord.com"),
    ("https://discord.com@evil.example/api/webhooks/1/SeCrEt", "user name or password"),
    ("https://user:SeCrEt@discord.com/api/webhooks/1/x", "user name or password"),
    ("https://discord.com/api/webhooks/123456789012345678", "missing its token"),
    ("https://discord.com/api/webhooks/123456789012345678/", "missing its token"),
    ("https://discord.com/api/webhooks/1/SeCrEt/extra", "must look like"),
    ("https://discord.com/api/webhooks/1/SeCrEt/../../x", "must look like"),
    ("https://discord.com/api/webhooks/abc/SeCrEt", "must look like"),
    ("https://discord.com/api/v10/webhooks/1/SeCrEt", "must look like"),
    ("https://discord.com/api/webhooks/1/SeC%2FrEt", "must look like"),
    ("https://discord.com/webhooks/1/SeCrEt", "must look like"),
    ("https://discord.com/api/webhooks/1/SeCrEt?thread_id=5", "query or a fragment"),
    ("https://discord.com/api/webhooks/1/SeCrEt#x", "query or a fragment"),
    ("https://discord.com\\@evil.example/api/webhooks/1/SeCrEt", "control"),
    (" https://discord.com/api/webhooks/1/SeCrEt", "spaces"),
    ("https://discord.com/api/webhooks/1/SeCrEt\n", "spaces"),
    ("https://dіscord.com/api/webhooks/1/SeCrEt", "non-ASCII"),  # Cyrillic і
    ("https://discord.com:99999/api/webhooks/1/SeCrEt", "not a valid URL"),
    ("http://127.0.0.1:8124/api/webhooks/1/SeCrEt", "https://"),  # not the api_base port
    ("https://127.0.0.1:8123/api/webhooks/1/SeCrEt", "on discord.com"),  # not its scheme
    ("https://discord.com/api/webhooks/1/" + "S" * 600, "longer than 512"),
]


@pytest.mark.parametrize(("url", "canonical"), GOOD)
def test_validate_webhook_url_accepts(url: str, canonical: str):
    assert validate_webhook_url(url, "http://127.0.0.1:8123") == canonical


@pytest.mark.parametrize(("url", "reason"), BAD)
def test_validate_webhook_url_refuses(url: str, reason: str):
    with pytest.raises(ValueError) as refused:
        validate_webhook_url(url, "http://127.0.0.1:8123")
    assert reason in str(refused.value)
    assert "SeCrEt" not in str(refused.value)  # the reason never repeats the URL


def test_loopback_is_accepted_only_when_configured():
    loop = "http://127.0.0.1:8123/api/webhooks/1/SeCrEt"
    with pytest.raises(ValueError, match="https://"):
        validate_webhook_url(loop)  # the default api_base is Discord
    assert validate_webhook_url("https://discord.com/api/webhooks/1/SeCrEt") == (
        "https://discord.com/api/webhooks/1/SeCrEt"
    )


# --- rate-limit buckets, measured at the fake ----------------------------------------


async def test_empty_bucket_is_waited_out_without_a_429(make, fake: DiscordFake, url: str):
    fake.limit, fake.window = 3, 1.0
    notifier = make()
    started = time.monotonic()
    results = await asyncio.gather(*(notifier.send(msg(url, key=f"k{i}")) for i in range(7)))
    elapsed = time.monotonic() - started
    assert all(isinstance(r, Delivered) for r in results), results
    assert fake.statuses() == [200] * 7  # not a single 429
    at = [h.at for h in fake.hits]
    log.warning(
        "bucket 3 per 1 s: 7 sends in %.2f s, waits at the fake %.3f s and %.3f s",
        elapsed,
        at[3] - at[2],
        at[6] - at[5],
    )
    # The 4th and 7th waited for the announced reset (window from the bucket's first hit).
    assert at[3] - at[0] >= 1.0 and at[6] - at[3] >= 1.0
    assert at[2] - at[0] < 0.5  # the first three did not wait
    assert 2.0 <= elapsed < 3.5


async def test_fake_answers_429_past_its_bucket(dc, url: str):
    """Guard the guard: ignoring the headers does get a 429 with both retry hints."""
    fake, _ = dc
    fake.limit, fake.window = 3, 1.0
    async with httpx.AsyncClient() as client:
        replies = [await client.post(url, json={"content": "x"}) for _ in range(4)]
    assert [r.status_code for r in replies] == [204, 204, 204, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in replies[:3]] == ["2", "1", "0"]
    body = replies[3].json()
    assert body["global"] is False and 0 < body["retry_after"] <= 1.0
    assert replies[3].headers["retry-after"] == "1"


async def test_webhook_token_never_in_logs_or_reasons(make, fake: DiscordFake, url: str, caplog):
    caplog.set_level(logging.DEBUG)
    notifier = make(timeout=0.3, max_wait=1.0)
    results = [await notifier.send(msg(url))]
    fake.force_429 = 1
    results.append(await notifier.send(msg(url)))
    results.append(await notifier.send(msg(url)))
    fake.force_5xx = 1
    other = make(timeout=0.3)
    results.append(await other.send(msg(url)))
    results.append(await other.send(msg(url.replace(HOOK_ID, "999999999999999999"))))
    fake.delay_s = 0.5
    results.append(await make(timeout=0.3).send(msg(url)))
    fake.delay_s = 0.0
    base = f"http://127.0.0.1:{free_port()}"
    down = make(api_base=base)
    results.append(await down.send(msg(f"{base}/api/webhooks/{HOOK_ID}/{HOOK_TOKEN}")))
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Delivered", "Retryable", "Retryable", "Retryable", "PermanentFailure"] + [
        "Retryable",
        "Retryable",
    ]
    assert "/api/webhooks/<redacted>" in caplog.text  # httpx's request line, redacted
    assert webhook_key(url) in caplog.text  # our lines name the webhook by its hash
    assert HOOK_TOKEN not in caplog.text and HOOK_TOKEN[:20] not in caplog.text
    for result in results:
        assert HOOK_TOKEN not in repr(result)
