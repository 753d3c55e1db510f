"""Web push against a loopback push service that decrypts and verifies like a real one."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate

import http_ece
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifiers.base import Delivered, Message, Notifier, PermanentFailure, Retryable
from notifiers.webpush import (
    WebPushNotifier,
    b64url_decode,
    b64url_encode,
    encrypt_payload,
    generate_vapid_keys,
    load_vapid_private_key,
    push_parts,
    retry_after_seconds,
    validate_subscription,
)
from tests.push_receiver import PushReceiver

SUBJECT = "mailto:ops@tickwatch.example"
TEXT = (
    "삼성전자(005930) 72,000원 돌파 (현재가 72,100원, +1.23%)\n\n"
    "틱워치에서 설정한 알림 규칙에 따라 보내드린 메일입니다. "
    "규칙 관리: https://tickwatch.example/rules.\n"
)


def message(recipient: str, key: str = "rule-7:2026-03-05T11:00:00+09:00:webpush:3") -> Message:
    return Message(
        recipient=recipient,
        subject="[틱워치] 삼성전자 72,000원 돌파",
        text=TEXT,
        html="<p>ignored</p>",
        idempotency_key=key,
    )


@pytest.fixture(scope="module")
def vapid() -> tuple[str, str]:
    return generate_vapid_keys()


@pytest.fixture
def receiver() -> Iterator[PushReceiver]:
    r = PushReceiver().start()
    yield r
    r.stop()


@pytest.fixture
async def make_notifier(vapid: tuple[str, str]) -> AsyncIterator:
    made: list[WebPushNotifier] = []

    def make(**kw: object) -> WebPushNotifier:
        args: dict[str, object] = {
            "vapid_private_key": vapid[1],
            "vapid_subject": SUBJECT,
            "timeout": 2.0,
            "allow_loopback": True,
        }
        args.update(kw)
        n = WebPushNotifier(**args)  # type: ignore[arg-type]
        made.append(n)
        return n

    yield make
    for n in made:
        await n.aclose()


async def test_receiver_decrypts_the_exact_payload_and_verifies_vapid(
    receiver: PushReceiver, make_notifier, vapid: tuple[str, str]
):
    notifier = make_notifier()
    assert isinstance(notifier, Notifier)
    assert notifier.channel == "webpush"
    assert notifier.public_key == vapid[0]
    sub = receiver.subscribe(application_server_key=vapid[0])
    before = int(time.time())
    result = await notifier.send(message(sub.subscription_json()))
    assert isinstance(result, Delivered)
    assert result.detail.startswith(f"{receiver.origin}/m/")
    assert receiver.rejections == []
    [got] = receiver.received
    assert got.sub_id == sub.sub_id
    assert got.payload == {
        "title": "[틱워치] 삼성전자 72,000원 돌파",
        "body": "삼성전자(005930) 72,000원 돌파 (현재가 72,100원, +1.23%)",
        "url": "https://tickwatch.example/rules",
        "tag": "rule-7:2026-03-05T11:00:00+09:00:webpush:3",
    }
    assert got.claims["aud"] == receiver.origin
    assert got.claims["sub"] == SUBJECT
    assert before + 12 * 3600 <= got.claims["exp"] <= int(time.time()) + 12 * 3600
    assert got.headers["ttl"] == "86400"
    assert got.headers["urgency"] == "high"
    assert got.headers["content-encoding"] == "aes128gcm"
    assert len(got.headers["topic"]) == 32


async def test_resend_carries_the_same_tag_and_topic(receiver: PushReceiver, make_notifier):
    notifier = make_notifier(ttl=600)
    sub = receiver.subscribe()
    for _ in range(2):
        assert isinstance(await notifier.send(message(sub.subscription_json())), Delivered)
    other = await notifier.send(message(sub.subscription_json(), key="rule-8:x"))
    assert isinstance(other, Delivered)
    tags = [r.payload["tag"] for r in receiver.received]
    topics = [r.headers["topic"] for r in receiver.received]
    assert tags == ["rule-7:2026-03-05T11:00:00+09:00:webpush:3"] * 2 + ["rule-8:x"]
    assert topics[0] == topics[1] != topics[2]
    assert [r.headers["ttl"] for r in receiver.received] == ["600"] * 3


def test_encryption_matches_the_rfc8291_worked_example():
    """RFC 8291 section 5: fixed keys and salt give this exact body."""
    server_key = load_vapid_private_key("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")
    body = encrypt_payload(
        b"When I grow up, I want to be a watermelon",
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "BTBZMqHH6r4Tts7J_aSIgg",
        salt=b64url_decode("DGv6ra1nlYgDCS1FRnbzlw"),
        server_key=server_key,
    )
    assert b64url_encode(body) == (
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLoc"
        "InmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLV"
        "WGNWQexSgSxsj_Qulcy4a-fN"
    )


async def test_tampered_signature_is_rejected_by_the_receiver(
    receiver: PushReceiver, make_notifier
):
    notifier = make_notifier()
    sub = receiver.subscribe()
    request = notifier.build_request(message(sub.subscription_json()))
    auth = request.headers["Authorization"]
    token = auth.split("t=", 1)[1].split(",", 1)[0]
    head, claims, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[5] ^= 0x01
    forged = auth.replace(token, f"{head}.{claims}.{b64url_encode(bytes(raw))}")
    async with httpx.AsyncClient() as client:
        bad = await client.post(
            request.url, headers={**request.headers, "Authorization": forged}, content=request.body
        )
        good = await client.post(request.url, headers=request.headers, content=request.body)
    assert (bad.status_code, good.status_code) == (401, 201)
    assert receiver.rejections == [(401, "vapid: bad JWT signature")]
    assert len(receiver.received) == 1


async def test_wrong_audience_is_rejected(receiver: PushReceiver, make_notifier):
    notifier = make_notifier()
    sub = receiver.subscribe()
    request = notifier.build_request(message(sub.subscription_json()))
    headers = {
        **request.headers,
        "Authorization": notifier.vapid_authorization("https://fcm.googleapis.com"),
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(request.url, headers=headers, content=request.body)
    assert response.status_code == 401
    assert receiver.rejections == [
        (401, f"vapid: aud 'https://fcm.googleapis.com' is not '{receiver.origin}'")
    ]
    assert receiver.received == []


async def test_tampered_ciphertext_is_rejected(receiver: PushReceiver, make_notifier):
    notifier = make_notifier()
    sub = receiver.subscribe()
    request = notifier.build_request(message(sub.subscription_json()))
    body = bytearray(request.body)
    body[-3] ^= 0xFF
    async with httpx.AsyncClient() as client:
        response = await client.post(request.url, headers=request.headers, content=bytes(body))
    assert response.status_code == 400
    assert receiver.rejections[0][1].startswith("cannot decrypt")


@pytest.mark.parametrize(
    ("shift", "reason"),
    [(-13 * 3600, "vapid: JWT expired"), (13 * 3600, "vapid: exp more than 24 hours away")],
)
async def test_exp_outside_the_window_is_rejected(
    receiver: PushReceiver, make_notifier, shift: int, reason: str
):
    notifier = make_notifier(clock=lambda: time.time() + shift)
    sub = receiver.subscribe()
    result = await notifier.send(message(sub.subscription_json()))
    assert isinstance(result, PermanentFailure)
    assert result.gone is False
    assert result.reason.startswith("push service 127.0.0.1 refused our VAPID authorization (401)")
    assert receiver.rejections == [(401, reason)]


async def test_application_server_key_mismatch_is_403(receiver: PushReceiver, make_notifier):
    notifier = make_notifier()
    other_public, _ = generate_vapid_keys()
    sub = receiver.subscribe(application_server_key=other_public)
    result = await notifier.send(message(sub.subscription_json()))
    assert result == PermanentFailure(
        "push service 127.0.0.1 refused our VAPID authorization (403): "
        "vapid: k does not match the applicationServerKey"
    )


@pytest.mark.parametrize("status", [404, 410])
async def test_gone_subscription(receiver: PushReceiver, make_notifier, status: int):
    notifier = make_notifier()
    sub = receiver.subscribe()
    receiver.gone.add(sub.sub_id)
    receiver.gone_status = status
    result = await notifier.send(message(sub.subscription_json()))
    assert result == PermanentFailure(f"subscription expired or unsubscribed ({status})", gone=True)


async def test_rate_limited_then_delivered(receiver: PushReceiver, make_notifier):
    notifier = make_notifier()
    sub = receiver.subscribe()
    receiver.rate_limited = 1
    first = await notifier.send(message(sub.subscription_json()))
    assert first == Retryable("push service 127.0.0.1 rate limited (429)", 17.0)
    assert isinstance(await notifier.send(message(sub.subscription_json())), Delivered)
    assert receiver.requests == 2


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(receiver: PushReceiver, make_notifier, status: int):
    notifier = make_notifier()
    sub = receiver.subscribe()
    receiver.fail_status = status
    result = await notifier.send(message(sub.subscription_json()))
    assert result == Retryable(f"push service 127.0.0.1 error {status}", 3.0)


async def test_payload_too_large_is_permanent(receiver: PushReceiver, make_notifier):
    notifier = make_notifier()
    sub = receiver.subscribe()
    receiver.max_body = 100
    result = await notifier.send(message(sub.subscription_json()))
    assert result == PermanentFailure("payload too large for the push service (413)")


async def test_bad_request_is_permanent(receiver: PushReceiver, make_notifier):
    """A request without TTL (RFC 8030 requires it) is refused 400 by the service."""
    notifier = make_notifier()
    sub = receiver.subscribe()
    request = notifier.build_request(message(sub.subscription_json()))
    headers = {k: v for k, v in request.headers.items() if k != "TTL"}
    async with httpx.AsyncClient() as client:
        response = await client.post(request.url, headers=headers, content=request.body)
    assert response.status_code == 400
    assert notifier._outcome(response, "127.0.0.1") == PermanentFailure(
        "push service 127.0.0.1 refused the message (400): TTL header required"
    )


async def test_timeout_is_retryable(receiver: PushReceiver, make_notifier):
    notifier = make_notifier(timeout=0.3)
    sub = receiver.subscribe()
    receiver.delay_s = 1.0
    started = time.monotonic()
    result = await notifier.send(message(sub.subscription_json()))
    assert result == Retryable("push service 127.0.0.1 timed out")
    assert time.monotonic() - started < 0.9


async def test_unreachable_service_is_retryable(make_notifier):
    from tests.conftest import free_port

    notifier = make_notifier()
    dead = PushReceiver(port=free_port())  # never started
    sub = dead.subscribe()
    result = await notifier.send(message(sub.subscription_json()))
    assert result == Retryable("push service 127.0.0.1 unreachable: ConnectError")


async def test_loopback_endpoint_needs_the_explicit_allowance(
    receiver: PushReceiver, make_notifier
):
    notifier = make_notifier(allow_loopback=False)
    sub = receiver.subscribe()
    result = await notifier.send(message(sub.subscription_json()))
    assert result == PermanentFailure(
        "invalid push subscription: the endpoint must be an https URL", gone=True
    )
    assert receiver.requests == 0


async def test_no_secret_in_logs_or_reasons(
    receiver: PushReceiver, make_notifier, vapid: tuple[str, str], caplog
):
    caplog.set_level(logging.DEBUG)
    notifier = make_notifier()
    sub = receiver.subscribe()
    results = [await notifier.send(message(sub.subscription_json()))]
    receiver.rate_limited = 1
    results.append(await notifier.send(message(sub.subscription_json())))
    receiver.gone.add(sub.sub_id)
    results.append(await notifier.send(message(sub.subscription_json())))
    assert [type(r) for r in results] == [Delivered, Retryable, PermanentFailure]
    private_scalar = str(sub.private_key.private_numbers().private_value)
    texts = [caplog.text, *(getattr(r, "reason", "") for r in results)]
    for text in texts:
        assert vapid[1] not in text
        assert b64url_encode(sub.auth) not in text
        assert private_scalar not in text
    assert "push service 127.0.0.1 answered 429" in caplog.text


# --- validation, keys, helpers -------------------------------------------------------------


def _keys() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url_encode(point), b64url_encode(b"\x07" * 16)


def _sub(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc", **keys: object) -> str:
    p256dh, auth = _keys()
    return json.dumps(
        {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": p256dh, "auth": auth}}
        | ({"keys": keys} if keys else {})
    )


def test_validate_subscription_normalises():
    p256dh, auth = _keys()
    text = json.dumps(
        {"endpoint": "https://updates.push.services.mozilla.com/wpush/v2/x", "expirationTime": None,
         "keys": {"p256dh": p256dh, "auth": auth}}
    )  # fmt: skip
    assert validate_subscription(text) == {
        "endpoint": "https://updates.push.services.mozilla.com/wpush/v2/x",
        "keys": {"p256dh": p256dh, "auth": auth},
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "the subscription is not valid JSON"),
        ("[1]", "the subscription must be a JSON object"),
        ('{"keys": {}}', "the subscription has no endpoint"),
        (_sub("http://push.example.com/x"), "the endpoint must be an https URL"),
        (_sub("http://127.0.0.1:8/x"), "the endpoint must be an https URL"),
        (_sub("/relative"), "the endpoint is not an absolute URL"),
        (_sub("https://u:p@push.example.com/x"), "the endpoint must not carry credentials"),
        ('{"endpoint": "https://a.example/x"}', "the subscription has no keys"),
        (_sub(p256dh="abc"), "the subscription keys need p256dh and auth"),
        (_sub(p256dh="@@", auth="AAAA"), "keys.p256dh is not base64url"),
        (
            _sub(p256dh=b64url_encode(b"\x04" + b"\x01" * 63), auth="AAAA"),
            "keys.p256dh must be a 65-byte uncompressed P-256 point, got 64 bytes",
        ),
        (
            _sub(p256dh=b64url_encode(b"\x04" + b"\x01" * 64), auth="AAAA"),
            "keys.p256dh is not a point on P-256",
        ),
        (
            _sub(p256dh=_keys()[0], auth=b64url_encode(b"x" * 12)),
            "keys.auth must be 16 bytes, got 12",
        ),
    ],
)  # fmt: skip
def test_validate_subscription_refuses(text: str, reason: str):
    with pytest.raises(ValueError) as info:
        validate_subscription(text)
    assert str(info.value) == reason


def test_loopback_is_an_explicit_allowance():
    text = _sub("http://127.0.0.1:8123/push/x")
    assert validate_subscription(text, allow_loopback=True)["endpoint"] == (
        "http://127.0.0.1:8123/push/x"
    )
    with pytest.raises(ValueError, match="https"):
        validate_subscription(_sub("http://push.example.com/x"), allow_loopback=True)


def test_generated_keys_pair_up_and_pem_loads():
    public, private = generate_vapid_keys()
    assert len(b64url_decode(public)) == 65 and b64url_decode(public)[0] == 4
    assert len(b64url_decode(private)) == 32
    key = load_vapid_private_key(private)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert WebPushNotifier(vapid_private_key=pem, vapid_subject=SUBJECT).public_key == public
    with pytest.raises(ValueError, match="32-byte"):
        load_vapid_private_key(b64url_encode(b"x" * 31))
    with pytest.raises(ValueError, match="mailto"):
        WebPushNotifier(vapid_private_key=private, vapid_subject="ops@example.com")


def test_payload_round_trips_through_http_ece():
    """Independent of the receiver: decrypt what encrypt_payload made with the UA key."""
    ua = ec.generate_private_key(ec.SECP256R1())
    p256dh = b64url_encode(
        ua.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    body = encrypt_payload(b'{"a":1}', p256dh, b64url_encode(b"s" * 16))
    assert body[16:20] == (4096).to_bytes(4, "big") and body[20] == 65
    assert http_ece.decrypt(body, private_key=ua, auth_secret=b"s" * 16) == b'{"a":1}'


def test_push_parts_and_retry_after():
    m = message("x")
    assert push_parts(m, "https://fallback") == (
        "[틱워치] 삼성전자 72,000원 돌파",
        "삼성전자(005930) 72,000원 돌파 (현재가 72,100원, +1.23%)",
        "https://tickwatch.example/rules",
    )
    plain = Message("x", "s", "no link here", "", "k")
    assert push_parts(plain, "https://fallback") == ("s", "no link here", "https://fallback")
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = 1_800_000_000.0
    assert retry_after_seconds(formatdate(now + 90, usegmt=True), now) == 90.0
