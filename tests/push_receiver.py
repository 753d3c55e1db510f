"""A loopback push service (RFC 8030) that plays the browser's part too.

It holds each subscription's PRIVATE ECDH key and auth secret (as a browser does), hands
out ``subscription_json()`` like ``PushSubscription.toJSON()``, and for every POST:

* checks the RFC 8030 headers (``TTL`` present, ``Content-Encoding: aes128gcm``),
* verifies the VAPID ``Authorization: vapid t=<jwt>, k=<key>`` (RFC 8292): ES256
  signature with ``k``, ``aud`` equal to this server's origin, ``exp`` in the future and
  at most 24 h away, ``sub`` a mailto:/https: URI; when the subscription was created with
  an ``applicationServerKey``, ``k`` must be that key (403 otherwise, like real services),
* decrypts the body with http_ece (aes128gcm, RFC 8291) using the private key and auth
  secret, and records the JSON payload.

Refusals are recorded in ``rejections`` with the reason, so tests can assert *why*.
Switches: ``gone`` (410, or ``gone_status``), ``rate_limited`` (429 + Retry-After),
``fail_status`` (5xx), ``delay_s`` (slower than the client's timeout), ``max_body`` (413
when exceeded).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import free_port
from tests.loopback import LoopbackServer


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class FakeSubscription:
    sub_id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None = None

    @property
    def p256dh(self) -> str:
        return b64u(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    def subscription_json(self) -> str:
        """What ``JSON.stringify(subscription)`` gives in a browser."""
        return json.dumps(
            {
                "endpoint": self.endpoint,
                "expirationTime": None,
                "keys": {"p256dh": self.p256dh, "auth": b64u(self.auth)},
            }
        )


@dataclass
class Received:
    sub_id: str
    payload: dict[str, Any]
    headers: dict[str, str]
    claims: dict[str, Any]


class VapidError(ValueError):
    pass


@dataclass
class PushReceiver:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    gone: set[str] = field(default_factory=set)  # sub ids answered ``gone_status``
    gone_status: int = 410  # some services answer 404 for an unknown subscription
    rate_limited: int = 0  # answer the next N pushes 429
    retry_after: str = "17"
    fail_status: int | None = None  # every push answered with this (5xx) while set
    delay_s: float = 0.0
    max_body: int = 4096
    received: list[Received] = field(default_factory=list)
    rejections: list[tuple[int, str]] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self.subscriptions: dict[str, FakeSubscription] = {}
        self._server: LoopbackServer | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def subscribe(self, application_server_key: str | None = None) -> FakeSubscription:
        """A new subscription with its own P-256 key pair and 16-byte auth secret."""
        sub_id = secrets.token_urlsafe(12)
        sub = FakeSubscription(
            sub_id=sub_id,
            endpoint=f"{self.origin}/push/{sub_id}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=os.urandom(16),
            application_server_key=application_server_key,
        )
        self.subscriptions[sub_id] = sub
        return sub

    # --- checks ------------------------------------------------------------------------

    def verify_vapid(self, authorization: str, now: float | None = None) -> tuple[str, dict]:
        """Return (k, claims) or raise VapidError naming the failed check."""
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "vapid":
            raise VapidError("authorization scheme is not vapid")
        params: dict[str, str] = {}
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            params[name.strip()] = value.strip()
        token, k = params.get("t"), params.get("k")
        if not token or not k:
            raise VapidError("authorization needs t= and k=")
        try:
            point = unb64u(k)
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError:
            raise VapidError("k is not a P-256 public key") from None
        pieces = token.split(".")
        try:
            header = json.loads(unb64u(pieces[0]))
            claims = json.loads(unb64u(pieces[1]))
            raw_sig = unb64u(pieces[2])
        except (IndexError, ValueError):
            raise VapidError("t is not a JWT") from None
        if len(pieces) != 3 or not isinstance(header, dict) or not isinstance(claims, dict):
            raise VapidError("t is not a JWT")
        if header.get("alg") != "ES256":
            raise VapidError("JWT alg is not ES256")
        if len(raw_sig) != 64:
            raise VapidError("ES256 signature must be 64 bytes")
        der = encode_dss_signature(
            int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big")
        )
        try:
            public.verify(der, f"{pieces[0]}.{pieces[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise VapidError("bad JWT signature") from None
        if claims.get("aud") != self.origin:
            raise VapidError(f"aud {claims.get('aud')!r} is not {self.origin!r}")
        current = time.time() if now is None else now
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= current:
            raise VapidError("JWT expired")
        if exp > current + 24 * 3600:
            raise VapidError("exp more than 24 hours away")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https://")):
            raise VapidError("sub missing or not mailto:/https:")
        return k, claims

    def _reject(self, status: int, reason: str, **headers: str) -> Response:
        self.rejections.append((status, reason))
        return Response(reason, status, headers=headers or None)

    # --- endpoint ------------------------------------------------------------------------

    async def push(self, request: Request) -> Response:
        self.requests += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        sub_id = request.path_params["sub_id"]
        sub = self.subscriptions.get(sub_id)
        body = await request.body()
        if sub is None or sub_id in self.gone:
            return self._reject(self.gone_status, "push subscription has unsubscribed or expired")
        if self.fail_status is not None:
            return self._reject(self.fail_status, "internal error", **{"Retry-After": "3"})
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return self._reject(429, "too many requests", **{"Retry-After": self.retry_after})
        if len(body) > self.max_body:
            return self._reject(413, "payload too large")
        if "ttl" not in request.headers:
            return self._reject(400, "TTL header required")
        if request.headers.get("content-encoding") != "aes128gcm":
            return self._reject(400, "content-encoding must be aes128gcm")
        try:
            k, claims = self.verify_vapid(request.headers.get("authorization", ""))
        except VapidError as exc:
            return self._reject(401, f"vapid: {exc}")
        if sub.application_server_key is not None and k != sub.application_server_key:
            return self._reject(403, "vapid: k does not match the applicationServerKey")
        try:
            plain = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
            payload = json.loads(plain)
        except (http_ece.ECEException, ValueError) as exc:
            return self._reject(400, f"cannot decrypt: {exc}")
        self.received.append(Received(sub_id, payload, dict(request.headers), claims))
        message_id = secrets.token_urlsafe(8)
        return Response(status_code=201, headers={"Location": f"{self.origin}/m/{message_id}"})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/push/{sub_id}", self.push, methods=["POST"])])

    def start(self) -> PushReceiver:
        self._server = LoopbackServer(self.app(), self.host, self.port, "push-receiver")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
