"""KIS credentials check: the websocket approval key.

``POST /oauth2/Approval`` proves an app key and secret pair without issuing an
access token. Token issues are limited to one a minute and each one sends the
account holder a KakaoTalk message, so "test connection" must never use them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from brokers.base import AuthExpired, BrokerUnavailable

log = logging.getLogger(__name__)

REAL_BASE_URL = "https://openapi.koreainvestment.com:9443"
PAPER_BASE_URL = "https://openapivts.koreainvestment.com:29443"


class CredentialsRejected(AuthExpired):
    """KIS refused the app key / secret pair."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ApprovalKey:
    value: str

    def __repr__(self) -> str:  # a credential: never in a log line
        return "ApprovalKey('***')"


def _reason(response: httpx.Response) -> str:
    """KIS answers errors in two shapes: its envelope, or error_code/description."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    code = body.get("error_code") or body.get("msg_cd") or ""
    text = body.get("error_description") or body.get("msg1") or ""
    return f"{code} {text}".strip()[:200] or f"HTTP {response.status_code}"


async def request_approval_key(
    client: httpx.AsyncClient, base_url: str, app_key: str, app_secret: str
) -> ApprovalKey:
    """Raises ``CredentialsRejected`` for a bad pair, ``BrokerUnavailable`` otherwise."""
    try:
        response = await client.post(
            f"{base_url.rstrip('/')}/oauth2/Approval",
            json={"grant_type": "client_credentials", "appkey": app_key, "secretkey": app_secret},
            headers={"content-type": "application/json; charset=utf-8"},
        )
    except httpx.HTTPError as exc:
        raise BrokerUnavailable(f"KIS unreachable: {type(exc).__name__}") from exc
    if response.status_code >= 500:
        raise BrokerUnavailable(f"KIS answered {_reason(response)}")
    if response.status_code == 200:
        try:
            key = response.json().get("approval_key")
        except (ValueError, AttributeError):
            key = None
        if isinstance(key, str) and key:
            return ApprovalKey(key)
    raise CredentialsRejected(_reason(response))
