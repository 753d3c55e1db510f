"""Settings, all from the environment (documented in .env.example).

One place reads the environment so that tests can build a ``Settings`` with
explicit values instead of patching globals.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = Field(default=f"sqlite:///{PROJECT_ROOT / 'data' / 'app.db'}")
    app_base_url: str = "http://localhost:3000"
    default_language: Literal["ko", "en"] = "ko"

    # Sessions
    session_ttl_hours: int = Field(default=24 * 14, ge=1)
    cookie_secure: Literal["auto", "true", "false"] = "auto"
    login_max_failures: int = Field(default=5, ge=1)
    # Reverse proxies in front of the app that append to X-Forwarded-For (nginx: 1).
    # 0 ignores the header, which anyone can forge; set it only behind such a proxy.
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    login_window_seconds: int = Field(default=300, ge=1)

    # Demo market (the paper broker's simulated KRX)
    market_seed: int = 7
    market_always_open: bool = True
    market_tick_interval: float = Field(default=1.0, gt=0)

    # Runner
    runner_enabled: bool = True
    # Which lock makes one of several workers the runner (app/runtime/leader.py):
    # auto = postgres for a PostgreSQL database, else redis if REDIS_URL, else local.
    leader_lock: Literal["auto", "postgres", "redis", "none"] = "auto"
    leader_lease_seconds: float = Field(default=6.0, ge=1.0, le=60.0)
    redis_url: str = ""
    # Names the lock: installs sharing one PostgreSQL database or Redis need distinct names.
    leader_lock_name: str = Field(default="tickwatch:runner", min_length=1, max_length=200)
    rule_sync_interval: float = Field(default=2.0, gt=0)
    ui_push_interval: float = Field(default=0.25, gt=0)
    chart_push_interval: float = Field(default=2.0, gt=0)
    bar_close_interval: float = Field(default=1.0, gt=0)
    delivery_poll_interval: float = Field(default=2.0, gt=0)
    delivery_max_attempts: int = Field(default=6, ge=1)
    delivery_backoff_base: float = Field(default=2.0, gt=0)
    # Minimum seconds between two sends to one channel, per kind; alerts that queue up
    # meanwhile go out together as one digest message (app/runtime/pacing.py).
    delivery_intervals: str = ""
    delivery_digest_max: int = Field(default=1000, ge=2, le=10000)
    delivery_concurrency: int = Field(default=4, ge=1, le=64)

    @field_validator("redis_url")
    @classmethod
    def _redis_from_reflex(cls, value: str) -> str:
        """Several workers need one Redis for both Reflex's state and our live bus; an
        operator who set only ``REFLEX_REDIS_URL`` would otherwise get workers whose
        pages never see a price (the bus would stay in each process)."""
        return value.strip() or os.environ.get("REFLEX_REDIS_URL", "").strip()

    @field_validator("delivery_intervals")
    @classmethod
    def _intervals_parse(cls, value: str) -> str:
        from app.runtime.pacing import parse_intervals  # light module; avoids a cycle

        parse_intervals(value)  # a typo fails at start-up, not as an unpaced channel
        return value

    # E-mail (SMTP). Empty host disables the e-mail channel.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "KRX Alerts <alerts@localhost>"
    smtp_timeout: float = 10.0

    # Demo seed
    demo_email: str = "demo@example.com"
    demo_password: str = ""

    # Credential vault. Keys: "kid:base64key,kid2:base64key" (32-byte keys) or a JSON
    # file {"active": "kid", "keys": {"kid": "base64key"}}. The demo generates a file.
    vault_keys: str = ""
    vault_active_key: str = ""
    vault_keys_file: str = ""

    # KIS Open API hosts (tests point these at a loopback fake)
    kis_real_base_url: str = "https://openapi.koreainvestment.com:9443"
    kis_paper_base_url: str = "https://openapivts.koreainvestment.com:29443"
    kis_timeout: float = Field(default=10.0, gt=0)
    kis_real_ws_url: str = "ws://ops.koreainvestment.com:21000"
    kis_paper_ws_url: str = "ws://ops.koreainvestment.com:31000"
    kis_real_rate_per_s: float = Field(default=20.0, gt=0)
    kis_paper_rate_per_s: float = Field(default=2.0, gt=0)
    kis_ws_max_subscriptions: int = Field(default=40, ge=1)

    # Shared market data: "simulated" (the demo) or "kis" with an operator's service key.
    # Users' orders always use their own credential, never this one.
    market_data_source: Literal["simulated", "kis"] = "simulated"
    kis_service_app_key: str = ""
    kis_service_app_secret: str = ""
    kis_service_paper: bool = False

    # Kiwoom REST API hosts
    kiwoom_base_url: str = "https://api.kiwoom.com"
    kiwoom_mock_base_url: str = "https://mockapi.kiwoom.com"
    kiwoom_ws_url: str = "wss://api.kiwoom.com:10000/api/dostk/websocket"
    kiwoom_mock_ws_url: str = "wss://mockapi.kiwoom.com:10000/api/dostk/websocket"

    # Paper account: fees as fractions of the traded value
    paper_initial_cash: int = Field(default=10_000_000, ge=0)
    paper_commission_rate: float = Field(default=0.00015, ge=0, lt=0.1)
    paper_sell_tax_rate: float = Field(default=0.002, ge=0, lt=0.1)
    paper_slippage_ticks: int = Field(default=0, ge=0, le=50)

    # Strategies. A plugins folder adds operator-installed strategies (see
    # docs/strategy-plugins.md); users only choose among registered ones.
    strategy_plugins_dir: str = ""
    # An order found unsent after a crash is placed on restart only if its signal is
    # younger than this; an older one is recorded as refused (stale) instead.
    strategy_order_max_age_seconds: float = Field(default=300.0, gt=0)
    # Seconds between attempts to reconcile an attachment whose broker was unreachable
    strategy_reconcile_interval: float = Field(default=30.0, gt=0)
    # Processes that train ML strategies' models, off the event loop
    strategy_training_workers: int = Field(default=2, ge=1, le=16)

    # Portfolio refresh from the user's broker or paper account (APScheduler job)
    portfolio_refresh_seconds: float = Field(default=60.0, gt=0)

    # Daily digest e-mail: local time (each user's own time zone) after which it goes out
    daily_digest_time: str = Field(default="16:10", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    # Sign-in
    local_login_enabled: bool = True
    oauth_flow_ttl_seconds: int = Field(default=600, ge=60)
    google_client_id: str = ""
    google_client_secret: str = ""
    google_discovery_url: str = "https://accounts.google.com/.well-known/openid-configuration"
    kakao_client_id: str = ""
    kakao_client_secret: str = ""
    kakao_discovery_url: str = "https://kauth.kakao.com/.well-known/openid-configuration"
    naver_client_id: str = ""
    naver_client_secret: str = ""
    naver_authorize_url: str = "https://nid.naver.com/oauth2.0/authorize"
    naver_token_url: str = "https://nid.naver.com/oauth2.0/token"
    naver_profile_url: str = "https://openapi.naver.com/v1/nid/me"
    apple_client_id: str = ""
    apple_team_id: str = ""
    apple_key_id: str = ""
    apple_private_key: str = ""
    apple_private_key_file: str = ""
    apple_discovery_url: str = "https://appleid.apple.com/.well-known/openid-configuration"

    # Notification channels. Every endpoint is configurable so tests use loopback fakes.
    telegram_bot_token: str = ""
    telegram_bot_username: str = ""
    telegram_api_base: str = "https://api.telegram.org"
    # Telegram's limits for a bot: about 1 message a second per chat and 30 a second
    # overall; raise them only if Telegram raised them for your bot (paid broadcasts).
    telegram_per_chat_per_s: float = Field(default=1.0, gt=0, le=1000)
    telegram_global_per_s: float = Field(default=30.0, gt=0, le=1000)
    telegram_link_ttl_minutes: int = Field(default=10, ge=1, le=24 * 60)
    channel_verify_ttl_hours: int = Field(default=24, ge=1)
    channel_verify_resend_seconds: int = Field(default=60, ge=0)
    discord_api_base: str = "https://discord.com"
    kakao_api_base: str = "https://kapi.kakao.com"
    kakao_auth_base: str = "https://kauth.kakao.com"
    vapid_public_key: str = ""
    vapid_private_key: str = ""
    vapid_subject: str = "mailto:alerts@localhost"
    fcm_project_id: str = ""
    fcm_service_account_file: str = ""
    fcm_api_base: str = "https://fcm.googleapis.com"
    fcm_token_url: str = "https://oauth2.googleapis.com/token"
    notify_timeout: float = Field(default=10.0, gt=0)

    log_level: str = "INFO"
    # JSON lines for log collectors: "true", "false", or "auto" (JSON unless stderr is
    # a terminal: a container or a service manager gets JSON, `make run` readable text)
    log_json: Literal["auto", "true", "false"] = "auto"

    @field_validator("log_json", mode="before")
    @classmethod
    def _log_json_words(cls, value: object) -> object:
        """The spellings of a boolean setting elsewhere in this file keep working."""
        words = {
            "1": "true",
            "yes": "true",
            "on": "true",
            "0": "false",
            "no": "false",
            "off": "false",
        }
        text = str(value).strip().lower()
        return words.get(text, text)

    @property
    def json_logs(self) -> bool:
        if self.log_json == "auto":
            return not sys.stderr.isatty()
        return self.log_json == "true"

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    """Tests and the CLI change the environment and need a fresh read."""
    get_settings.cache_clear()
