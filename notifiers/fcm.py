"""Firebase Cloud Messaging HTTP v1, for operators who ship a native app wrapper.

Auth is Google's OAuth2 service-account flow (RFC 7523): we sign a short JWT with the
service account's RSA key and trade it at the token endpoint for an access token. The
token lives an hour and token exchanges are rate limited, so it is cached until just
before it expires and shared by every send; one lock makes concurrent sends wait for a
single exchange instead of stampeding the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from notifiers.base import Delivered, DeliveryResult, Message, PermanentFailure, Retryable
from notifiers.webpush import b64url_encode, push_parts, retry_after_seconds

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # Google's maximum
TOKEN_MARGIN = 60.0  # renew this long before the access token expires
MAX_BODY_CHARS = 1000


class _TokenFailure(Exception):
    """The token exchange failed; carries the outcome the send should report."""

    def __init__(self, outcome: Retryable | PermanentFailure) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class FcmNotifier:
    channel = "fcm"

    def __init__(
        self,
        project_id: str,
        service_account_info: dict[str, Any],
        api_base: str = "https://fcm.googleapis.com",
        token_url: str = "",
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        *,
        default_url: str = "",
    ) -> None:
        """``service_account_info`` is the parsed JSON key file. ``token_url`` defaults
        to the file's ``token_uri`` (Google's endpoint), overridable for tests."""
        if not project_id:
            raise ValueError("FCM needs a project id")
        email = service_account_info.get("client_email")
        pem = service_account_info.get("private_key")
        if not isinstance(email, str) or not isinstance(pem, str):
            raise ValueError("the service account needs client_email and private_key")
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the service account key must be an RSA key")
        self._key = key
        self._key_id = str(service_account_info.get("private_key_id", ""))
        self.client_email = email
        self.project_id = project_id
        self.api_base = api_base.rstrip("/")
        self.token_url = (
            token_url
            or service_account_info.get("token_uri")
            or "https://oauth2.googleapis.com/token"
        )
        self.timeout = timeout
        self.default_url = default_url
        self._clock = clock
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    # --- OAuth2 ------------------------------------------------------------------------

    def assertion(self) -> str:
        """The RS256-signed JWT we present at the token endpoint (RFC 7523)."""
        now = int(self._clock())
        header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
        if self._key_id:
            header["kid"] = self._key_id
        claims = {
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        signing_input = (
            f"{b64url_encode(json.dumps(header).encode())}."
            f"{b64url_encode(json.dumps(claims).encode())}"
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url_encode(signature)}"

    async def access_token(self, *, stale: str | None = None) -> str:
        """The cached token, or a fresh one. ``stale``: a token the API just refused; it
        is replaced unless another send already did so while we waited for the lock."""
        async with self._lock:
            fresh = self._clock() < self._token_expires - TOKEN_MARGIN
            if self._token is not None and self._token != stale and fresh:
                return self._token
            self._token = None
            try:
                response = await self._client.post(
                    self.token_url,
                    data={"grant_type": GRANT_TYPE, "assertion": self.assertion()},
                    timeout=self.timeout,
                )
            except httpx.TimeoutException:
                raise _TokenFailure(Retryable("FCM token endpoint timed out")) from None
            except httpx.HTTPError as exc:
                raise _TokenFailure(
                    Retryable(f"FCM token endpoint unreachable: {type(exc).__name__}")
                ) from None
            body = _json(response)
            if response.status_code == 200 and isinstance(body.get("access_token"), str):
                self._token = body["access_token"]
                self._token_expires = self._clock() + float(body.get("expires_in", 3600))
                log.info("FCM access token issued for %s", self.client_email)
                return self._token
            error = str(body.get("error", "")) or f"HTTP {response.status_code}"
            if response.status_code == 429 or response.status_code >= 500:
                raise _TokenFailure(
                    Retryable(
                        f"FCM token endpoint error ({error})",
                        retry_after_seconds(response.headers.get("retry-after"), self._clock()),
                    )
                )
            # invalid_grant (bad signature, revoked key, skewed clock), invalid_client...:
            # the operator must fix the service account; retrying will not help.
            log.warning("FCM token exchange refused: %s", error)
            raise _TokenFailure(
                PermanentFailure(f"FCM refused the service account {self.client_email} ({error})")
            )

    # --- sending -------------------------------------------------------------------------

    def body(self, message: Message) -> dict[str, Any]:
        title, text, url = push_parts(message, self.default_url)
        key = message.idempotency_key
        return {
            "message": {
                "token": message.recipient,
                "notification": {"title": title, "body": text[:MAX_BODY_CHARS]},
                # FCM data values must be strings.
                "data": {"url": url, "tag": key},
                # Same tag / collapse id: a re-sent alert replaces the shown one.
                "android": {"notification": {"tag": key[:64]}},
                "apns": {"headers": {"apns-collapse-id": key[:64]}},
            }
        }

    async def send(self, message: Message) -> DeliveryResult:
        if not message.recipient:
            return PermanentFailure("no FCM registration token", gone=True)
        url = f"{self.api_base}/v1/projects/{self.project_id}/messages:send"
        payload = self.body(message)
        refused: str | None = None
        for attempt in range(2):
            try:
                token = await self.access_token(stale=refused)
            except _TokenFailure as exc:
                return exc.outcome
            try:
                response = await self._client.post(
                    url,
                    json=payload,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=self.timeout,
                )
            except httpx.TimeoutException:
                return Retryable("FCM timed out")
            except httpx.HTTPError as exc:
                return Retryable(f"FCM unreachable: {type(exc).__name__}")
            if response.status_code == 401 and attempt == 0:
                if _error_code(_json(response)) == "THIRD_PARTY_AUTH_ERROR":
                    break  # APNs/web credentials at Firebase, not our token
                log.info("FCM refused the access token; fetching a new one")
                refused = token
                continue
            return self._outcome(response)
        return self._outcome(response)

    def _outcome(self, response: httpx.Response) -> DeliveryResult:
        status = response.status_code
        body = _json(response)
        if status == 200:
            return Delivered(str(body.get("name", "")))
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        state = str(error.get("status", ""))
        code = _error_code(body)
        text = str(error.get("message", ""))[:200]
        label = f"{state}/{code}" if state and code and code != state else state or code
        label = label or str(status)
        retry_after = retry_after_seconds(response.headers.get("retry-after"), self._clock())
        if code == "UNREGISTERED" or status == 404:
            return PermanentFailure(f"FCM token is no longer registered ({label})", gone=True)
        if code == "SENDER_ID_MISMATCH":
            return PermanentFailure(
                f"FCM token belongs to another Firebase project ({label})", gone=True
            )
        if status == 400 or state == "INVALID_ARGUMENT":
            # A malformed registration token is an address that can never work.
            bad_token = "registration token" in text.lower()
            return PermanentFailure(f"FCM rejected the message ({label}): {text}", gone=bad_token)
        if status == 401:
            return PermanentFailure(f"FCM refused our credentials ({label}): {text}")
        if status == 429 or status >= 500:
            return Retryable(f"FCM unavailable ({status} {label})", retry_after)
        return PermanentFailure(f"FCM refused the message ({status} {label}): {text}")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_code(body: dict[str, Any]) -> str:
    """The FCM-specific code sits in ``error.details[].errorCode`` (FcmError)."""
    error = body.get("error")
    if not isinstance(error, dict):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return ""
