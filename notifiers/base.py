"""The channel protocol: one rendered message in, one typed outcome out.

The delivery worker decides retries from the outcome alone, so every channel
must sort its failures into "try again later" and "will never work".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Message:
    recipient: str
    subject: str
    text: str
    html: str
    # Stable per (event, channel): channels that support it dedupe on this.
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class Delivered:
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Retryable:
    reason: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    """``gone``: the address itself no longer exists (a web-push subscription answered
    404/410, a deleted Discord webhook), so the channel should be removed or disabled,
    not just this delivery given up."""

    reason: str
    gone: bool = False


DeliveryResult = Delivered | Retryable | PermanentFailure


@runtime_checkable
class Notifier(Protocol):
    channel: str

    async def send(self, message: Message) -> DeliveryResult: ...
