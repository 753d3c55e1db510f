"""Which channels this server can send on, from the operator's settings.

A channel without its configuration is simply absent: its deliveries end as
"not configured on this server" instead of failing at start-up, so an operator
can add channels one at a time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from app.config import Settings
from app.services.kakao_tokens import VaultKakaoTokenStore
from notifiers.base import Notifier
from notifiers.discord import DiscordNotifier
from notifiers.email import EmailNotifier, SmtpConfig
from notifiers.fcm import FcmNotifier
from notifiers.kakao import KakaoMemoNotifier
from notifiers.telegram import TelegramNotifier
from notifiers.webpush import WebPushNotifier

log = logging.getLogger(__name__)


def _loopback(base_url: str) -> bool:
    return base_url.startswith(("http://localhost", "http://127.0.0.1"))


def build_notifiers(settings: Settings) -> dict[str, Notifier]:
    out: dict[str, Notifier] = {}
    if settings.email_enabled:
        out["email"] = EmailNotifier(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                security=settings.smtp_security,
                username=settings.smtp_username,
                password=settings.smtp_password,
                sender=settings.smtp_from,
                timeout=settings.smtp_timeout,
            )
        )
    # Discord webhooks are the users' own: always available.
    out["discord"] = DiscordNotifier(
        api_base=settings.discord_api_base, timeout=settings.notify_timeout
    )
    if settings.telegram_bot_token:
        out["telegram"] = TelegramNotifier(
            settings.telegram_bot_token,
            api_base=settings.telegram_api_base,
            timeout=settings.notify_timeout,
            per_chat_per_s=settings.telegram_per_chat_per_s,
            global_per_s=settings.telegram_global_per_s,
        )
    if settings.vapid_private_key:
        out["webpush"] = WebPushNotifier(
            settings.vapid_private_key,
            settings.vapid_subject,
            timeout=settings.notify_timeout,
            default_url=settings.app_base_url,
            allow_loopback=_loopback(settings.app_base_url),
        )
    if settings.kakao_client_id:
        # Users link their own KakaoTalk (app.api.kakao_link); their tokens stay in the vault.
        out["kakao"] = KakaoMemoNotifier(
            client_id=settings.kakao_client_id,
            client_secret=settings.kakao_client_secret,
            token_store=VaultKakaoTokenStore(),
            api_base=settings.kakao_api_base,
            auth_base=settings.kakao_auth_base,
            timeout=settings.notify_timeout,
            default_url=settings.app_base_url,
        )
    if settings.fcm_project_id and settings.fcm_service_account_file:
        try:
            info = json.loads(Path(settings.fcm_service_account_file).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            log.error("FCM is off: the service account file is unreadable (%s)", type(exc).__name__)
        else:
            out["fcm"] = FcmNotifier(
                settings.fcm_project_id,
                info,
                api_base=settings.fcm_api_base,
                token_url=settings.fcm_token_url,
                timeout=settings.notify_timeout,
                default_url=settings.app_base_url,
            )
    log.info("notification channels on this server: %s", ", ".join(sorted(out)) or "in-app only")
    return out
