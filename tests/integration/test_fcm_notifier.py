"""FCM HTTP v1 against a loopback Google token endpoint + FCM send API."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from notifiers.base import Delivered, Message, Notifier, PermanentFailure, Retryable
from notifiers.fcm import FcmNotifier
from tests.fcm_fake import FcmFake

PROJECT = "tickwatch-test"
EMAIL = "fcm-sender@tickwatch-test.iam.gserviceaccount.com"
DEVICE = "fXk2" + "a" * 148  # FCM registration tokens are ~150 characters
KEY = "rule-7:2026-03-05T11:00:00+09:00:fcm:4"
TEXT = "SK하이닉스(000660) 5% 상승\n\nManage your rules at https://tickwatch.example/rules.\n"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake(rsa_key: rsa.RSAPrivateKey) -> Iterator[FcmFake]:
    f = FcmFake(PROJECT, {EMAIL: rsa_key.public_key()}).start()
    yield f
    f.stop()


def account(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The shape of a downloaded service-account JSON key file."""
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0f3c9a",
        "private_key": _pem(key),
        "client_email": EMAIL,
        "token_uri": "https://oauth2.googleapis.com/token",
    }


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def make(fake: FcmFake, rsa_key: rsa.RSAPrivateKey) -> AsyncIterator:
    made: list[FcmNotifier] = []

    def build(key: rsa.RSAPrivateKey | None = None, **kw: object) -> FcmNotifier:
        args: dict[str, object] = {
            "project_id": PROJECT,
            "service_account_info": account(key or rsa_key),
            "api_base": fake.base_url,
            "token_url": fake.token_url,
            "timeout": 2.0,
            "clock": Clock(),
        }
        args.update(kw)
        n = FcmNotifier(**args)  # type: ignore[arg-type]
        made.append(n)
        return n

    yield build
    for n in made:
        await n.aclose()


def msg(device: str = DEVICE, key: str = KEY) -> Message:
    return Message(device, "SK하이닉스 5% 상승", TEXT, "<p>x</p>", key)


async def test_send_delivers_the_exact_message(fake: FcmFake, make):
    notifier = make()
    assert isinstance(notifier, Notifier) and notifier.channel == "fcm"
    result = await notifier.send(msg())
    assert fake.names and result == Delivered(fake.names[0])
    assert result.detail.startswith(f"projects/{PROJECT}/messages/0:")
    assert fake.sent == [
        {
            "message": {
                "token": DEVICE,
                "notification": {
                    "title": "SK하이닉스 5% 상승",
                    "body": "SK하이닉스(000660) 5% 상승",
                },
                "data": {"url": "https://tickwatch.example/rules", "tag": KEY},
                "android": {"notification": {"tag": KEY}},
                "apns": {"headers": {"apns-collapse-id": KEY}},
            }
        }
    ]


async def test_assertion_is_verified_at_the_fake(fake: FcmFake, make):
    before = int(time.time())
    assert isinstance(await make().send(msg()), Delivered)
    [(header, claims)] = fake.assertions
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "0f3c9a"}
    assert claims["iss"] == EMAIL
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["aud"] == fake.token_url
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 3600


async def test_token_is_cached_across_sends(fake: FcmFake, make):
    notifier = make()
    for i in range(3):
        assert isinstance(await notifier.send(msg(key=f"k{i}")), Delivered)
    assert (fake.token_exchanges, fake.token_requests, len(fake.sent)) == (1, 1, 3)


async def test_concurrent_sends_share_one_exchange(fake: FcmFake, make):
    notifier = make()
    results = await asyncio.gather(*(notifier.send(msg(key=f"k{i}")) for i in range(6)))
    assert all(isinstance(r, Delivered) for r in results)
    assert fake.token_exchanges == 1
    assert sorted(m["message"]["data"]["tag"] for m in fake.sent) == [f"k{i}" for i in range(6)]


async def test_token_renewed_when_it_expires(fake: FcmFake, make):
    clock = Clock()
    notifier = make(clock=clock)
    assert isinstance(await notifier.send(msg()), Delivered)
    clock.offset += 3599 - 59  # inside the renewal margin
    fake.advance(3599 - 59)
    assert isinstance(await notifier.send(msg()), Delivered)
    assert fake.token_exchanges == 2
    assert fake.auth_failures == 0


async def test_401_refreshes_once_and_retries(fake: FcmFake, make):
    notifier = make()
    assert isinstance(await notifier.send(msg()), Delivered)
    fake.revoke_tokens()
    assert isinstance(await notifier.send(msg()), Delivered)
    assert (fake.token_exchanges, fake.auth_failures, fake.send_requests) == (2, 1, 3)


async def test_401_twice_gives_up(fake: FcmFake, make):
    notifier = make()
    fake.reject_all_tokens = True
    result = await notifier.send(msg())
    assert isinstance(result, PermanentFailure) and result.gone is False
    assert result.reason.startswith("FCM refused our credentials (UNAUTHENTICATED): Request had")
    assert (fake.token_exchanges, fake.auth_failures, fake.send_requests) == (2, 2, 2)


async def test_wrong_key_is_refused_at_the_token_endpoint(fake: FcmFake, make):
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    result = await make(impostor).send(msg())
    assert result == PermanentFailure(f"FCM refused the service account {EMAIL} (invalid_grant)")
    assert fake.token_refusals == ["Invalid JWT Signature."]
    assert fake.send_requests == 0


async def test_wrong_audience_is_refused(fake: FcmFake, make):
    fake.audience = "https://oauth2.googleapis.com/token"
    result = await make().send(msg())
    assert isinstance(result, PermanentFailure)
    assert fake.token_refusals == ["Invalid JWT: Failed audience check."]


async def test_skewed_clock_is_refused(fake: FcmFake, make):
    clock = Clock()
    clock.offset = -2 * 3600
    result = await make(clock=clock).send(msg())
    assert isinstance(result, PermanentFailure)
    assert fake.token_refusals[0].startswith("Invalid JWT: Token must be a short-lived token")


async def test_unregistered_token_is_gone(fake: FcmFake, make):
    fake.unregistered.add(DEVICE)
    result = await make().send(msg())
    assert result == PermanentFailure(
        "FCM token is no longer registered (NOT_FOUND/UNREGISTERED)", gone=True
    )


async def test_malformed_token_is_gone(fake: FcmFake, make):
    fake.malformed.add("bogus")
    result = await make().send(msg("bogus"))
    assert result == PermanentFailure(
        "FCM rejected the message (INVALID_ARGUMENT): "
        "The registration token is not a valid FCM registration token",
        gone=True,
    )


async def test_other_invalid_argument_is_permanent_not_gone(fake: FcmFake, make):
    fake.invalid_argument = "Invalid value at 'message.android.ttl'."
    result = await make().send(msg())
    assert result == PermanentFailure(
        "FCM rejected the message (INVALID_ARGUMENT): Invalid value at 'message.android.ttl'."
    )


async def test_quota_then_delivered(fake: FcmFake, make):
    notifier = make()
    fake.quota_next = 1
    first = await notifier.send(msg())
    assert first == Retryable("FCM unavailable (429 RESOURCE_EXHAUSTED/QUOTA_EXCEEDED)", 30.0)
    assert isinstance(await notifier.send(msg()), Delivered)


async def test_unavailable_with_retry_after(fake: FcmFake, make):
    fake.fail_status, fake.retry_after = 503, "45"
    assert await make().send(msg()) == Retryable("FCM unavailable (503 UNAVAILABLE)", 45.0)


async def test_internal_error_is_retryable(fake: FcmFake, make):
    fake.fail_status = 500
    assert await make().send(msg()) == Retryable("FCM unavailable (500 INTERNAL)", None)


async def test_send_timeout_is_retryable(fake: FcmFake, make):
    fake.delay_s = 1.0
    started = time.monotonic()
    assert await make(timeout=0.3).send(msg()) == Retryable("FCM timed out")
    assert time.monotonic() - started < 0.9


async def test_token_endpoint_timeout_and_errors_are_retryable(fake: FcmFake, make):
    notifier = make(timeout=0.3)
    fake.token_delay_s = 1.0
    assert await notifier.send(msg()) == Retryable("FCM token endpoint timed out")
    fake.token_delay_s = 0.0
    fake.token_status = 503
    assert await notifier.send(msg()) == Retryable(
        "FCM token endpoint error (internal_failure)", None
    )
    fake.token_status = None
    assert isinstance(await notifier.send(msg()), Delivered)
    assert fake.token_exchanges == 1


async def test_secrets_stay_out_of_logs_and_reasons(
    fake: FcmFake, make, rsa_key: rsa.RSAPrivateKey, caplog
):
    caplog.set_level(logging.DEBUG)
    notifier = make()
    results = [await notifier.send(msg())]
    fake.revoke_tokens()
    fake.reject_all_tokens = True
    results.append(await notifier.send(msg()))
    fake.reject_all_tokens = False
    fake.quota_next = 1
    results.append(await notifier.send(msg()))
    assert fake.token_exchanges == 2
    pem_body = _pem(rsa_key).splitlines()[5]
    assertion_sig = notifier.assertion().rsplit(".", 1)[1]
    texts = [caplog.text, *(getattr(r, "reason", "") for r in results)]
    issued = fake.every_token
    assert len(issued) == 2
    for text in texts:
        assert pem_body not in text
        assert assertion_sig not in text
        for token in issued:
            assert token not in text
    assert f"FCM access token issued for {EMAIL}" in caplog.text


def test_bad_service_account_is_refused_at_construction():
    with pytest.raises(ValueError, match="client_email and private_key"):
        FcmNotifier(project_id=PROJECT, service_account_info={"client_email": EMAIL})
    with pytest.raises(ValueError, match="project id"):
        FcmNotifier(project_id="", service_account_info={})
