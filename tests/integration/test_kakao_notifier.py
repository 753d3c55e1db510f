"""KakaoTalk "send to me" against a loopback kapi/kauth fake."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from notifiers.base import Delivered, Message, Notifier, PermanentFailure, Retryable
from notifiers.kakao import KakaoMemoNotifier, KakaoTokens, KakaoTokenStore
from tests.kakao_fake import KakaoFake

CLIENT_ID = "3f1c0ffee0ddba11rest"
CLIENT_SECRET = "kakao-client-secret-7c1d"
SUBJECT = "[틱워치] 삼성전자 72,000원 돌파"
TEXT = (
    "삼성전자(005930) 72,000원 돌파 (현재가 72,100원)\n\n"
    "틱워치에서 설정한 알림 규칙에 따라 보내드린 메일입니다. 규칙 관리: https://tickwatch.example/rules\n"
)
RECONNECT = "the user must reconnect Kakao"


class MemoryStore:
    """Stands in for the app's vault-backed store."""

    def __init__(self) -> None:
        self.tokens: dict[str, KakaoTokens] = {}
        self.saves: list[tuple[str, KakaoTokens]] = []
        self.loads = 0

    async def load(self, recipient: str) -> KakaoTokens | None:
        self.loads += 1
        return self.tokens.get(recipient)

    async def save(self, recipient: str, tokens: KakaoTokens) -> None:
        self.tokens[recipient] = tokens
        self.saves.append((recipient, tokens))


@pytest.fixture
def fake() -> Iterator[KakaoFake]:
    f = KakaoFake(CLIENT_ID, CLIENT_SECRET).start()
    yield f
    f.stop()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def make(fake: KakaoFake, store: MemoryStore) -> AsyncIterator:
    made: list[KakaoMemoNotifier] = []

    def build(**kw: object) -> KakaoMemoNotifier:
        args: dict[str, object] = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token_store": store,
            "api_base": fake.base_url,
            "auth_base": fake.base_url,
            "timeout": 2.0,
        }
        args.update(kw)
        n = KakaoMemoNotifier(**args)  # type: ignore[arg-type]
        made.append(n)
        return n

    yield build
    for n in made:
        await n.aclose()


def connect(
    fake: KakaoFake, store: MemoryStore, *, expires_in: float = 3600, scopes: set[str] | None = None
) -> tuple[str, str, str]:
    """A user connected Kakao: returns (recipient, access token, refresh token)."""
    user, access, refresh = fake.connect(scopes)
    recipient = f"kakao-credential:{user}"
    store.tokens[recipient] = KakaoTokens(
        access, refresh, datetime.now(UTC) + timedelta(seconds=expires_in)
    )
    return recipient, access, refresh


def msg(recipient: str, text: str = TEXT) -> Message:
    return Message(recipient, SUBJECT, text, "<p>x</p>", "rule-7:2026-03-05T11:00:00+09:00:kakao:5")


async def test_memo_sent_with_the_exact_template(fake: KakaoFake, store: MemoryStore, make):
    notifier = make()
    assert isinstance(notifier, Notifier) and notifier.channel == "kakao"
    assert isinstance(store, KakaoTokenStore)
    recipient, access, _ = connect(fake, store)
    assert await notifier.send(msg(recipient)) == Delivered()
    [memo] = fake.memos
    assert memo.access_token == access
    assert memo.template == {
        "object_type": "text",
        "text": f"{SUBJECT}\n삼성전자(005930) 72,000원 돌파 (현재가 72,100원)",
        "link": {
            "web_url": "https://tickwatch.example/rules",
            "mobile_web_url": "https://tickwatch.example/rules",
        },
        "button_title": "자세히 보기",
    }
    assert (fake.refreshes, fake.refresh_requests, store.saves) == (0, 0, [])


async def test_long_text_is_cut_to_200_characters(fake: KakaoFake, store: MemoryStore, make):
    recipient, _, _ = connect(fake, store)
    body = "가" * 300
    assert await make().send(msg(recipient, text=body)) == Delivered()
    text = fake.memos[0].template["text"]
    assert len(text) == 200
    assert text == (f"{SUBJECT}\n" + body)[:199] + "…"


async def test_link_falls_back_to_default_url(fake: KakaoFake, store: MemoryStore, make):
    recipient, _, _ = connect(fake, store)
    no_link = "alert without a link"
    assert (
        await make(default_url="https://tickwatch.example/").send(msg(recipient, no_link))
        == Delivered()
    )
    assert await make(button_title="").send(msg(recipient, no_link)) == Delivered()
    first, second = (m.template for m in fake.memos)
    assert first["link"] == {
        "web_url": "https://tickwatch.example/",
        "mobile_web_url": "https://tickwatch.example/",
    }
    assert first["button_title"] == "자세히 보기"
    assert second["link"] == {} and "button_title" not in second


async def test_expired_by_time_refreshes_first(fake: KakaoFake, store: MemoryStore, make):
    recipient, old_access, refresh = connect(fake, store, expires_in=30)  # inside the margin
    before = datetime.now(UTC)
    assert await make().send(msg(recipient)) == Delivered()
    assert (fake.refreshes, fake.memo_requests) == (1, 1)  # no wasted 401 first
    [(saved_for, saved)] = store.saves
    assert saved_for == recipient
    assert saved.access_token != old_access
    assert saved.refresh_token == refresh  # no rotation: the old one is kept
    expected = before + timedelta(seconds=21599)
    assert expected <= saved.expires_at <= datetime.now(UTC) + timedelta(seconds=21599)
    assert fake.memos[0].access_token == saved.access_token


async def test_minus_401_refreshes_and_retries_once(fake: KakaoFake, store: MemoryStore, make):
    recipient, old_access, _ = connect(fake, store)
    fake.expire_access_tokens()
    assert await make().send(msg(recipient)) == Delivered()
    assert (fake.memo_requests, fake.refreshes) == (2, 1)
    assert fake.memos[0].access_token == store.tokens[recipient].access_token != old_access


async def test_rotated_refresh_token_is_saved_and_used(fake: KakaoFake, store: MemoryStore, make):
    fake.rotate = True
    notifier = make()
    recipient, _, first_refresh = connect(fake, store)
    fake.expire_access_tokens()
    assert await notifier.send(msg(recipient)) == Delivered()
    second_refresh = store.tokens[recipient].refresh_token
    assert second_refresh != first_refresh
    # The old refresh token is dead at Kakao now; only the saved one can work.
    fake.expire_access_tokens()
    assert await notifier.send(msg(recipient)) == Delivered()
    assert fake.refreshes == 2 and fake.refresh_errors == []
    assert store.tokens[recipient].refresh_token not in (first_refresh, second_refresh)
    assert len(store.saves) == 2


async def test_concurrent_sends_refresh_once(fake: KakaoFake, store: MemoryStore, make):
    fake.rotate = True
    notifier = make()
    recipient, _, _ = connect(fake, store, expires_in=-10)
    results = await asyncio.gather(*(notifier.send(msg(recipient)) for _ in range(4)))
    assert results == [Delivered()] * 4
    assert (fake.refreshes, fake.refresh_requests, len(fake.memos)) == (1, 1, 4)
    assert fake.refresh_errors == []


async def test_invalid_grant_means_reconnect(fake: KakaoFake, store: MemoryStore, make):
    recipient, _, refresh = connect(fake, store, expires_in=-10)
    fake.revoke_refresh_tokens()
    result = await make().send(msg(recipient))
    assert result == PermanentFailure(
        f"Kakao authorization expired or was revoked (invalid_grant KOE322): {RECONNECT}"
    )
    assert refresh not in result.reason
    assert fake.memo_requests == 0


async def test_401_after_refresh_is_permanent(fake: KakaoFake, store: MemoryStore, make):
    recipient, _, _ = connect(fake, store)
    fake.expire_access_tokens()
    fake.access_lifetime = 0  # every refreshed token is dead on arrival
    result = await make().send(msg(recipient))
    assert result == PermanentFailure(
        f"Kakao refused the refreshed access token (-401): {RECONNECT}"
    )
    assert (fake.memo_requests, fake.refreshes) == (2, 1)


async def test_missing_talk_message_consent(fake: KakaoFake, store: MemoryStore, make):
    recipient, _, _ = connect(fake, store, scopes={"profile_nickname"})
    result = await make().send(msg(recipient))
    assert result == PermanentFailure(
        "Kakao consent for talk_message (sending KakaoTalk messages) is missing (-402): "
        "the user must reconnect Kakao and agree to it"
    )
    assert fake.refreshes == 0


async def test_bad_client_secret_is_reported(fake: KakaoFake, store: MemoryStore, make):
    recipient, _, _ = connect(fake, store, expires_in=-10)
    result = await make(client_secret="wrong").send(msg(recipient))
    assert result == PermanentFailure(
        "Kakao refused this server's client id/secret (invalid_client KOE010): "
        "check KAKAO_CLIENT_ID and KAKAO_CLIENT_SECRET"
    )


async def test_not_connected(make):
    result = await make().send(msg("kakao-credential:404"))
    assert result == PermanentFailure(f"Kakao is not connected: {RECONNECT}")


async def test_quota_minus_10_then_delivered(fake: KakaoFake, store: MemoryStore, make):
    notifier = make()
    recipient, _, _ = connect(fake, store)
    fake.quota_next = 1
    assert await notifier.send(msg(recipient)) == Retryable("Kakao API quota exceeded (-10)")
    assert await notifier.send(msg(recipient)) == Delivered()


async def test_429_with_retry_after(fake: KakaoFake, store: MemoryStore, make):
    recipient, _, _ = connect(fake, store)
    fake.quota_next, fake.quota_status, fake.retry_after = 1, 429, "60"
    assert await make().send(msg(recipient)) == Retryable("Kakao API quota exceeded (-10)", 60.0)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (500, "Kakao API server error (500, None)"),
        (503, "Kakao API server error (503, -9798)"),
    ],
)
async def test_server_errors_are_retryable(
    fake: KakaoFake, store: MemoryStore, make, status: int, reason: str
):
    recipient, _, _ = connect(fake, store)
    fake.fail_status = status
    assert await make().send(msg(recipient)) == Retryable(reason)


async def test_memo_timeout_is_retryable(fake: KakaoFake, store: MemoryStore, make):
    recipient, _, _ = connect(fake, store)
    fake.delay_s = 1.0
    started = time.monotonic()
    assert await make(timeout=0.3).send(msg(recipient)) == Retryable("Kakao API timed out")
    assert time.monotonic() - started < 0.9


async def test_refresh_timeout_and_5xx_are_retryable(fake: KakaoFake, store: MemoryStore, make):
    notifier = make(timeout=0.3)
    recipient, _, _ = connect(fake, store, expires_in=-10)
    fake.token_delay_s = 1.0
    assert await notifier.send(msg(recipient)) == Retryable("Kakao token refresh timed out")
    fake.token_delay_s = 0.0
    fake.token_fail_status = 502
    assert await notifier.send(msg(recipient)) == Retryable(
        "Kakao token refresh failed (server_error)"
    )
    fake.token_fail_status = None
    assert await notifier.send(msg(recipient)) == Delivered()
    assert fake.memo_requests == 1


async def test_no_secret_in_logs_reasons_or_repr(fake: KakaoFake, store: MemoryStore, make, caplog):
    caplog.set_level(logging.DEBUG)
    fake.rotate = True
    notifier = make()
    ok, _, _ = connect(fake, store)
    fake.expire_access_tokens()
    results = [await notifier.send(msg(ok))]
    revoked, _, _ = connect(fake, store, expires_in=-10)
    fake.revoke_refresh_tokens()
    results.append(await notifier.send(msg(revoked)))
    no_scope, _, _ = connect(fake, store, scopes=set())
    results.append(await notifier.send(msg(no_scope)))
    assert [type(r) for r in results] == [Delivered, PermanentFailure, PermanentFailure]
    assert len(fake.every_token) == 8
    texts = [
        caplog.text,
        *(getattr(r, "reason", "") for r in results),
        *(repr(t) for t in store.tokens.values()),
    ]
    for text in texts:
        assert CLIENT_SECRET not in text
        for token in fake.every_token:
            assert token not in text
    assert f"Kakao token refreshed for {ok} (refresh token rotated)" in caplog.text
    assert "Kakao token refresh refused: invalid_grant KOE322" in caplog.text
