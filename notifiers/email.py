"""E-mail over SMTP (plain, STARTTLS or implicit TLS), with a text and an HTML part."""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from notifiers.base import Delivered, DeliveryResult, Message, PermanentFailure, Retryable

log = logging.getLogger(__name__)
_DOMAIN = re.compile(r"@([^>\s]+)")


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int = 25
    security: str = "none"  # none | starttls | tls
    username: str = ""
    password: str = ""
    sender: str = "alerts@localhost"
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = None


class EmailNotifier:
    channel = "email"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def build(self, message: Message) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.config.sender
        msg["To"] = message.recipient
        msg["Subject"] = message.subject
        msg["Date"] = formatdate(localtime=False)
        domain_match = _DOMAIN.search(self.config.sender)
        # Same key -> same Message-ID, so a resend after a crash is one message to mail
        # clients that thread and de-duplicate by it (make_msgid adds time and
        # randomness, so it is built here from the key alone).
        domain = domain_match.group(1) if domain_match else "localhost"
        if message.idempotency_key:
            digest = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:32]
            msg["Message-ID"] = f"<{digest}@{domain}>"
        else:
            msg["Message-ID"] = make_msgid(domain=domain)
        msg["X-Tickwatch-Key"] = message.idempotency_key
        msg.set_content(message.text)
        msg.add_alternative(message.html, subtype="html")
        return msg

    async def send(self, message: Message) -> DeliveryResult:
        cfg = self.config
        try:
            await aiosmtplib.send(
                self.build(message),
                hostname=cfg.host,
                port=cfg.port,
                use_tls=cfg.security == "tls",
                start_tls=cfg.security == "starttls",
                username=cfg.username or None,
                password=cfg.password or None,
                timeout=cfg.timeout,
                tls_context=cfg.ssl_context,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            # A 4xx at RCPT (greylisting, "421 service not available") is "later",
            # not "never": only an all-5xx refusal gives the recipient up.
            if exc.recipients and all(500 <= r.code < 600 for r in exc.recipients):
                return PermanentFailure(f"recipient refused: {_short(detail)}")
            return Retryable(f"recipient deferred: {_short(detail)}")
        except aiosmtplib.SMTPAuthenticationError as exc:
            return PermanentFailure(f"SMTP authentication failed ({exc.code})")
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                return PermanentFailure(f"SMTP {exc.code}: {_short(exc.message)}")
            return Retryable(f"SMTP {exc.code}: {_short(exc.message)}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Retryable(f"{type(exc).__name__}: {_short(exc)}")
        return Delivered()


def _short(value: object) -> str:
    return str(value).replace("\n", " ")[:200]
