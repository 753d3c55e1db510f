"""Web push (RFC 8030) with an encrypted payload (RFC 8291, aes128gcm) and VAPID (RFC 8292).

The browser hands us a ``PushSubscription`` (endpoint + the user agent's ECDH key and
auth secret). Push services only relay opaque bytes, so the payload is encrypted to the
browser's key; VAPID proves to the push service that we are the application server the
subscription was created for. The HTTP call is made with httpx on the event loop; the
crypto is a single ECDH + AES-GCM over a few hundred bytes (well under a millisecond),
so it runs inline instead of paying for a thread hop.

Also home to two small helpers the other push-like channels (FCM, KakaoTalk) share:
``push_parts`` (title/body/link from a rendered ``Message``) and ``retry_after_seconds``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import http_ece
import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from notifiers.base import Delivered, DeliveryResult, Message, PermanentFailure, Retryable

log = logging.getLogger(__name__)

P256DH_LENGTH = 65  # an uncompressed P-256 point: 0x04 || X || Y
AUTH_LENGTH = 16
VAPID_MAX_LIFETIME = 24 * 3600  # RFC 8292 section 2: exp no more than 24 hours away
VAPID_LIFETIME = 12 * 3600  # what we sign: comfortably inside the limit, despite skew
RECORD_SIZE = 4096
# Push services accept 4096 bytes of body; the aes128gcm header (86), the tag (16) and
# the delimiter (1) leave about 3993 for the JSON. Bodies are trimmed well below that.
MAX_BODY_CHARS = 1000
MAX_TITLE_CHARS = 200
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_URL = re.compile(r"https?://[^\s<>\"']+")


# --- helpers shared with the FCM and KakaoTalk notifiers ---------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Browsers emit unpadded base64url; some tools add padding or use the standard
    alphabet. Accept all of those, reject anything else."""
    cleaned = text.strip().rstrip("=").replace("+", "-").replace("/", "_")
    if not re.fullmatch(r"[A-Za-z0-9_-]*", cleaned):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def push_parts(message: Message, default_url: str = "") -> tuple[str, str, str]:
    """(title, body, url) for a notification, from a message rendered for e-mail.

    The alert text is "<body>\\n\\n<footer with the rules URL>": a notification shows
    only the first paragraph, and the first URL in the text becomes the click target.
    """
    title = message.subject.strip()[:MAX_TITLE_CHARS]
    body = message.text.strip().split("\n\n", 1)[0].strip() or message.text.strip()
    found = _URL.search(message.text)
    url = found.group(0).rstrip(".,);:!?") if found else default_url
    return title, body, url


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


# --- subscriptions and keys ---------------------------------------------------------------


def validate_subscription(json_text: str, *, allow_loopback: bool = False) -> dict[str, Any]:
    """Check a ``PushSubscription.toJSON()`` and return it normalised to
    ``{"endpoint", "keys": {"p256dh", "auth"}}``.

    Checked up front so a bad subscription is refused when the browser registers it,
    not discovered on the first alert. ``allow_loopback`` admits plain-http endpoints
    on 127.0.0.1/localhost, for tests and a developer's machine only: real push
    services are always https.
    """
    try:
        data = json.loads(json_text)
    except (TypeError, ValueError):
        raise ValueError("the subscription is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the subscription must be a JSON object")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError("the subscription has no endpoint")
    if len(endpoint) > 2048:
        raise ValueError("the endpoint is too long")
    parts = urlsplit(endpoint)
    if not parts.hostname:
        raise ValueError("the endpoint is not an absolute URL")
    if parts.scheme != "https" and not (
        allow_loopback and parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    ):
        raise ValueError("the endpoint must be an https URL")
    if parts.username or parts.password:
        raise ValueError("the endpoint must not carry credentials")
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise ValueError("the subscription has no keys")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    if not isinstance(p256dh, str) or not isinstance(auth, str):
        raise ValueError("the subscription keys need p256dh and auth")
    try:
        point = b64url_decode(p256dh)
    except ValueError:
        raise ValueError("keys.p256dh is not base64url") from None
    if len(point) != P256DH_LENGTH or point[0] != 0x04:
        raise ValueError(
            f"keys.p256dh must be a {P256DH_LENGTH}-byte uncompressed P-256 point, "
            f"got {len(point)} bytes"
        )
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise ValueError("keys.p256dh is not a point on P-256") from None
    try:
        secret = b64url_decode(auth)
    except ValueError:
        raise ValueError("keys.auth is not base64url") from None
    if len(secret) != AUTH_LENGTH:
        raise ValueError(f"keys.auth must be {AUTH_LENGTH} bytes, got {len(secret)}")
    return {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}


def generate_vapid_keys() -> tuple[str, str]:
    """A new VAPID key pair as ``(public, private)``, both unpadded base64url: the
    public key is the 65-byte uncompressed point browsers want as
    ``applicationServerKey``, the private key the raw 32-byte scalar."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return b64url_encode(public), b64url_encode(private)


def load_vapid_private_key(value: str) -> ec.EllipticCurvePrivateKey:
    """The raw base64url scalar ``generate_vapid_keys`` gives, or a PEM (what
    ``vapid --gen`` and most tutorials produce)."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the VAPID key must be a P-256 EC key")
        return key
    try:
        raw = b64url_decode(text)
    except ValueError:
        raise ValueError("the VAPID private key is neither PEM nor base64url") from None
    if len(raw) != 32:
        raise ValueError("the VAPID private key must be a 32-byte P-256 scalar")
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


def encrypt_payload(
    payload: bytes,
    p256dh: str,
    auth: str,
    *,
    salt: bytes | None = None,
    server_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """RFC 8291 aes128gcm body: header (salt, record size, our ephemeral public key)
    followed by one record. ``salt`` and ``server_key`` are fresh per message; they are
    parameters only so the RFC's worked example can be reproduced in tests."""
    return http_ece.encrypt(
        payload,
        salt=salt if salt is not None else os.urandom(16),
        private_key=server_key or ec.generate_private_key(ec.SECP256R1()),
        dh=b64url_decode(p256dh),
        auth_secret=b64url_decode(auth),
        rs=RECORD_SIZE,
        version="aes128gcm",
    )


@dataclass(frozen=True, slots=True)
class PushRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class WebPushNotifier:
    channel = "webpush"

    def __init__(
        self,
        vapid_private_key: str,
        vapid_subject: str,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        ttl: int = 24 * 3600,
        *,
        urgency: str = "high",
        default_url: str = "",
        allow_loopback: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``ttl``: how long the push service keeps the message for an offline device. A
        day: an alert is still worth reading the same day, not a week later.
        ``urgency`` high: price alerts should wake the device."""
        if not vapid_subject.startswith(("mailto:", "https://")):
            raise ValueError("the VAPID subject must be a mailto: or https: URI")
        self._key = load_vapid_private_key(vapid_private_key)
        self.public_key = b64url_encode(
            self._key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )
        self.subject = vapid_subject
        self.timeout = timeout
        self.ttl = ttl
        self.urgency = urgency
        self.default_url = default_url
        self.allow_loopback = allow_loopback
        self._clock = clock
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        # audience -> (header, exp): one signature per push service per few hours.
        self._jwt_cache: dict[str, tuple[str, int]] = {}

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def vapid_authorization(self, audience: str) -> str:
        """``vapid t=<ES256 JWT>, k=<our public key>`` for one push service origin,
        reused until an hour before it expires."""
        now = int(self._clock())
        cached = self._jwt_cache.get(audience)
        if cached is not None and cached[1] - now > 3600 and cached[1] - now <= VAPID_LIFETIME:
            return cached[0]
        exp = now + VAPID_LIFETIME
        header = b64url_encode(json.dumps({"typ": "JWT", "alg": "ES256"}).encode())
        claims = b64url_encode(
            json.dumps({"aud": audience, "exp": exp, "sub": self.subject}).encode()
        )
        signing_input = f"{header}.{claims}".encode("ascii")
        der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        value = f"vapid t={header}.{claims}.{signature}, k={self.public_key}"
        self._jwt_cache[audience] = (value, exp)
        return value

    def payload(self, message: Message) -> bytes:
        """What the service worker receives: the ``tag`` is the idempotency key, so a
        re-sent alert replaces the shown notification instead of adding a second one."""
        title, body, url = push_parts(message, self.default_url)
        data = {
            "title": title,
            "body": body[:MAX_BODY_CHARS],
            "url": url,
            "tag": message.idempotency_key,
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()

    def build_request(self, message: Message) -> PushRequest:
        """The exact request ``send`` makes (raises ValueError for a bad subscription)."""
        sub = validate_subscription(message.recipient, allow_loopback=self.allow_loopback)
        endpoint = sub["endpoint"]
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        body = encrypt_payload(self.payload(message), sub["keys"]["p256dh"], sub["keys"]["auth"])
        headers = {
            "Authorization": self.vapid_authorization(audience),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.ttl),
            "Urgency": self.urgency,
            # RFC 8030 5.4: a pending message with the same topic is replaced, so a
            # retry of the same alert never queues twice at the push service.
            "Topic": b64url_encode(hashlib.sha256(message.idempotency_key.encode()).digest()[:24]),
        }
        return PushRequest(endpoint, headers, body)

    async def send(self, message: Message) -> DeliveryResult:
        try:
            request = self.build_request(message)
        except ValueError as exc:
            return PermanentFailure(f"invalid push subscription: {exc}", gone=True)
        host = urlsplit(request.url).hostname or "?"
        try:
            response = await self._client.post(
                request.url, headers=request.headers, content=request.body, timeout=self.timeout
            )
        except httpx.TimeoutException:
            return Retryable(f"push service {host} timed out")
        except httpx.HTTPError as exc:
            return Retryable(f"push service {host} unreachable: {type(exc).__name__}")
        return self._outcome(response, host)

    def _outcome(self, response: httpx.Response, host: str) -> DeliveryResult:
        status = response.status_code
        if status in (200, 201, 202):
            return Delivered(response.headers.get("location", ""))
        detail = _short(response.text)
        log.info("push service %s answered %s", host, status)
        if status in (404, 410):
            return PermanentFailure(f"subscription expired or unsubscribed ({status})", gone=True)
        if status == 429:
            return Retryable(
                f"push service {host} rate limited (429)",
                retry_after_seconds(response.headers.get("retry-after"), self._clock()),
            )
        if status == 413:
            return PermanentFailure("payload too large for the push service (413)")
        if status in (401, 403):
            return PermanentFailure(
                f"push service {host} refused our VAPID authorization ({status}): {detail}"
            )
        if status >= 500:
            return Retryable(
                f"push service {host} error {status}",
                retry_after_seconds(response.headers.get("retry-after"), self._clock()),
            )
        return PermanentFailure(f"push service {host} refused the message ({status}): {detail}")


def _short(value: str) -> str:
    return value.replace("\n", " ")[:200]
