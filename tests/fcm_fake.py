"""A loopback fake of Google's OAuth2 token endpoint and the FCM HTTP v1 send API.

* ``POST /token`` (RFC 7523 jwt-bearer): verifies the RS256 assertion with the service
  account's PUBLIC key, checks ``iss`` is a known account, ``scope`` includes
  firebase.messaging, ``aud`` is this endpoint, ``iat`` not in the future (60 s skew),
  ``exp`` in the future and at most an hour after ``iat``; refusals are Google's
  ``400 {"error": "invalid_grant", "error_description": ...}``. Counts exchanges.
* ``POST /v1/projects/{project}/messages:send``: needs ``Authorization: Bearer`` with a
  live token it issued (401 UNAUTHENTICATED otherwise), validates the message (token,
  notification strings, string-only data), and answers like FCM: ``{"name"}``; 404
  NOT_FOUND + FcmError UNREGISTERED; 400 INVALID_ARGUMENT for malformed tokens; 429
  RESOURCE_EXHAUSTED/QUOTA_EXCEEDED and 503 UNAVAILABLE with Retry-After; 500 INTERNAL.

Time: ``advance(seconds)`` moves the fake's wall clock (token expiry, JWT windows).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import free_port
from tests.loopback import LoopbackServer

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fcm_error(
    status: int, state: str, message: str, code: str = "", **headers: str
) -> JSONResponse:
    error: dict[str, Any] = {"code": status, "message": message, "status": state}
    if code:
        error["details"] = [{"@type": FCM_ERROR, "errorCode": code}]
    return JSONResponse({"error": error}, status, headers=headers or None)


@dataclass
class FcmFake:
    project_id: str
    service_accounts: dict[str, rsa.RSAPublicKey]  # client_email -> public key
    port: int = field(default_factory=free_port)
    token_lifetime: int = 3599
    unregistered: set[str] = field(default_factory=set)
    malformed: set[str] = field(default_factory=set)
    invalid_argument: str | None = None  # refuse every send 400 with this message
    quota_next: int = 0  # answer the next N sends 429
    retry_after: str = "30"
    fail_status: int | None = None  # 500 or 503 for every send while set
    reject_all_tokens: bool = False  # 401 whatever the bearer
    token_status: int | None = None  # the token endpoint fails with this status
    delay_s: float = 0.0  # sends wait this long
    token_delay_s: float = 0.0
    audience: str = ""  # expected aud; defaults to this server's /token
    offset: float = 0.0
    # records
    token_exchanges: int = 0  # successful
    token_requests: int = 0
    token_refusals: list[str] = field(default_factory=list)
    assertions: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    every_token: list[str] = field(default_factory=list)  # every access token issued
    names: list[str] = field(default_factory=list)  # the "name" of every accepted message
    send_requests: int = 0
    auth_failures: int = 0

    def __post_init__(self) -> None:
        self.issued: dict[str, float] = {}  # access token -> expiry (fake clock)
        self._server: LoopbackServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def revoke_tokens(self) -> None:
        self.issued.clear()

    # --- token endpoint ----------------------------------------------------------------

    def _check_assertion(self, assertion: str) -> str | None:
        """None if valid, else Google's error_description."""
        parts = assertion.split(".")
        if len(parts) != 3:
            return "Invalid JWT: not a JWT."
        try:
            header = json.loads(_unb64u(parts[0]))
            claims = json.loads(_unb64u(parts[1]))
            signature = _unb64u(parts[2])
        except ValueError:
            return "Invalid JWT: cannot decode."
        if header.get("alg") != "RS256":
            return "Invalid JWT: alg must be RS256."
        key = self.service_accounts.get(claims.get("iss", ""))
        if key is None:
            return "Invalid JWT: unknown issuer."
        try:
            key.verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return "Invalid JWT Signature."
        if claims.get("aud") != (self.audience or self.token_url):
            return "Invalid JWT: Failed audience check."
        if SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid JWT: missing scope."
        now = self.now()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return "Invalid JWT: iat and exp required."
        if iat > now + 60 or exp <= now or exp - iat > 3600:
            return (
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim."
            )
        self.assertions.append((header, claims))
        return None

    async def token(self, request: Request) -> JSONResponse:
        self.token_requests += 1
        if self.token_delay_s:
            await asyncio.sleep(self.token_delay_s)
        if self.token_status is not None:
            return JSONResponse({"error": "internal_failure"}, self.token_status)
        form = await request.form()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"},
                400,
            )
        problem = self._check_assertion(str(form.get("assertion", "")))
        if problem is not None:
            self.token_refusals.append(problem)
            return JSONResponse({"error": "invalid_grant", "error_description": problem}, 400)
        self.token_exchanges += 1
        value = "ya29." + secrets.token_urlsafe(96)
        self.issued[value] = self.now() + self.token_lifetime
        self.every_token.append(value)
        return JSONResponse(
            {"access_token": value, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    # --- FCM -------------------------------------------------------------------------------

    def _message_problem(self, body: Any) -> str | None:
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return "Invalid JSON payload received. Unknown name or missing 'message'."
        if not isinstance(message.get("token"), str) or not message["token"]:
            return "Recipient of the message is not set."
        note = message.get("notification", {})
        if not isinstance(note, dict) or not all(isinstance(v, str) for v in note.values()):
            return "Invalid value at 'message.notification'."
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return "Invalid value at 'message.data': values must be strings."
        return None

    async def send(self, request: Request) -> JSONResponse:
        self.send_requests += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        bearer = request.headers.get("authorization", "")
        token = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else ""
        expiry = self.issued.get(token)
        if self.reject_all_tokens or expiry is None or expiry <= self.now():
            self.auth_failures += 1
            return fcm_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        if request.path_params["project"] != self.project_id:
            return fcm_error(403, "PERMISSION_DENIED", "Permission denied on project.")
        try:
            body = await request.json()
        except ValueError:
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = self._message_problem(body) or self.invalid_argument
        if problem:
            return fcm_error(400, "INVALID_ARGUMENT", problem, "INVALID_ARGUMENT")
        if self.fail_status == 503:
            return fcm_error(
                503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE",
                **{"Retry-After": self.retry_after},
            )  # fmt: skip
        if self.fail_status is not None:
            return fcm_error(
                self.fail_status, "INTERNAL", "Internal error encountered.", "INTERNAL"
            )
        if self.quota_next > 0:
            self.quota_next -= 1
            return fcm_error(
                429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED",
                **{"Retry-After": self.retry_after},
            )  # fmt: skip
        device = body["message"]["token"]
        if device in self.unregistered:
            return fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if device in self.malformed:
            return fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            )
        self.sent.append(body)
        name = f"projects/{self.project_id}/messages/0:{secrets.randbelow(10**16)}"
        self.names.append(name)
        return JSONResponse({"name": name})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self.token, methods=["POST"]),
                Route("/v1/projects/{project}/messages:send", self.send, methods=["POST"]),
            ]
        )

    def start(self) -> FcmFake:
        self._server = LoopbackServer(self.app(), "127.0.0.1", self.port, "fcm-fake")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
