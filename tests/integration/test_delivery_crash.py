"""1,000 alerts to six real-protocol channels; the delivering process is SIGKILLed
in the middle and started again.

The worker is the product's own process (``python -m app.cli deliver``), the fakes
speak each service's protocol, and the count is taken where the messages arrive.
None may be lost. A send in flight at the instant of the kill cannot be known to
have arrived (none of these APIs takes an idempotency key), so it is sent again
and its row is flagged ``resumed``; the test checks that every duplicate the fakes
saw is such a flagged row, and that no channel has more than the one send it had
in flight. Everything else arrives exactly once.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func
from sqlmodel import col, select

from app import db
from app.config import get_settings
from app.models.alerts import AlertEvent, Delivery
from app.models.channels import NotificationChannel
from app.models.common import utcnow
from app.services import channels
from app.services import rules as rules_service
from app.services.kakao_tokens import encode_tokens
from app.vault_keys import KeyRing, set_key_ring
from notifiers.kakao import KakaoTokens
from notifiers.webpush import generate_vapid_keys
from tests.discord_fake import DiscordFake
from tests.fcm_fake import FcmFake
from tests.integration.helpers import make_user, seed_symbols
from tests.kakao_fake import KakaoFake
from tests.push_receiver import PushReceiver
from tests.telegram_fake import TOKEN as BOT_TOKEN
from tests.telegram_fake import TelegramFake

pytestmark = pytest.mark.usefixtures("database")

ROOT = Path(__file__).resolve().parents[2]
ALERTS = 1000
PRICE0 = 100_000  # alert i trades at 100,000 + i: its price names it in every channel
PRICE = re.compile(r"(?<![\d,])10\d,\d{3}(?![\d,])")
WEBHOOK_ID, WEBHOOK_TOKEN = "987654321098765432", "W" * 68
CHAT = "777000777"
FCM_TOKEN = "fcm-device-token:" + "A" * 140
PROJECT, SA_EMAIL = "tickwatch-test", "push@tickwatch-test.iam.gserviceaccount.com"


def _ids(texts: list[str]) -> list[int]:
    out = []
    for text in texts:
        found = {int(m.replace(",", "")) - PRICE0 for m in PRICE.findall(text)}
        assert len(found) == 1, text  # one alert per message
        out.append(found.pop())
    return out


class Fakes:
    def __init__(self, smtp, tmp_path: Path) -> None:
        self.smtp = smtp
        self.telegram = TelegramFake(per_chat_limit=100_000, global_limit=100_000)
        self.discord = DiscordFake(limit=100_000, window=1.0)
        self.discord.add_webhook(WEBHOOK_ID, WEBHOOK_TOKEN)
        self.push = PushReceiver()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.fcm = FcmFake(PROJECT, {SA_EMAIL: key.public_key()})
        self.sa_file = tmp_path / "fcm-account.json"
        self.sa_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": PROJECT,
                    "private_key_id": "k1",
                    "private_key": key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ).decode(),
                    "client_email": SA_EMAIL,
                }
            )
        )
        self.kakao = KakaoFake(client_id="kakao-crash-client")
        self.kakao.start()
        self.servers = [self.telegram.serve(), self.discord.serve()]
        self.push.start()
        self.fcm.start()
        self.vapid_public, self.vapid_private = generate_vapid_keys()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.push.stop()
        self.fcm.stop()
        self.kakao.stop()

    def received_counts(self) -> dict[str, int]:
        return {
            "email": len(self.smtp.messages),
            "telegram": len(self.telegram.messages),
            "discord": len(self.discord.posted),
            "webpush": len(self.push.received),
            "fcm": len(self.fcm.sent),
            "kakao": len(self.kakao.memos),
            "push_rejections": self.push.rejections[:3],
            "fcm_refusals": self.fcm.token_refusals[:3],
        }

    def received(self) -> dict[str, list[int]]:
        return {
            "email": _ids([m.get_body(("plain",)).get_content() for m in list(self.smtp.messages)]),
            "telegram": _ids([m.visible for m in list(self.telegram.messages)]),
            "discord": _ids([json.dumps(p.payload) for p in list(self.discord.posted)]),
            "webpush": _ids([json.dumps(r.payload) for r in list(self.push.received)]),
            "fcm": _ids([json.dumps(b["message"]["notification"]) for b in list(self.fcm.sent)]),
            "kakao": _ids([m.template["text"] for m in list(self.kakao.memos)]),
        }


def _env(database: str, fakes: Fakes, key: bytes) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database,
        "VAULT_KEYS": f"crash:{base64.b64encode(key).decode()}",
        "VAULT_ACTIVE_KEY": "crash",
        "VAULT_KEYS_FILE": "",
        "LOG_LEVEL": "WARNING",
        "APP_BASE_URL": "http://127.0.0.1:3000",
        "SMTP_HOST": fakes.smtp.host,
        "SMTP_PORT": str(fakes.smtp.port),
        "SMTP_SECURITY": "none",
        "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "TELEGRAM_API_BASE": fakes.servers[0].base_url,
        # The fake allows more (as Telegram does for paid broadcasts): 1,000 at the
        # default 1/s would take a quarter of an hour.
        "TELEGRAM_PER_CHAT_PER_S": "500",
        "TELEGRAM_GLOBAL_PER_S": "500",
        "DISCORD_API_BASE": fakes.servers[1].base_url,
        "VAPID_PUBLIC_KEY": fakes.vapid_public,
        "VAPID_PRIVATE_KEY": fakes.vapid_private,
        "FCM_PROJECT_ID": PROJECT,
        "FCM_SERVICE_ACCOUNT_FILE": str(fakes.sa_file),
        "FCM_API_BASE": fakes.fcm.base_url,
        "FCM_TOKEN_URL": fakes.fcm.token_url,
        "KAKAO_CLIENT_ID": fakes.kakao.client_id,
        "KAKAO_API_BASE": fakes.kakao.base_url,
        "KAKAO_AUTH_BASE": fakes.kakao.base_url,
        # No pacing: every alert is its own message, so the count per channel is exact.
        "DELIVERY_INTERVALS": "telegram=0,discord=0,webpush=0,fcm=0,email=0,kakao=0",
        "DELIVERY_CONCURRENCY": "8",
        "DELIVERY_POLL_INTERVAL": "0.05",
        "DELIVERY_BACKOFF_BASE": "0.05",
    }


async def _seed(fakes: Fakes) -> dict[str, str]:
    """The user, their four channels and 1,000 alerts, each with a delivery per channel."""
    await seed_symbols()
    user = await make_user("crash@example.com")
    targets = {"email": "email"}
    async with db.session() as s:
        tg = await channels.add_telegram_chat(s, user.id, CHAT, "phone")
        dc = await channels.add_discord(
            s,
            user.id,
            f"{fakes.servers[1].base_url}/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}",
            "room",
        )
        wp = await channels.add_webpush(
            s, user.id, fakes.push.subscribe(fakes.vapid_public).subscription_json(), "laptop"
        )
        fcm = await channels._add(s, user.id, "fcm", FCM_TOKEN, "", "app", verified=True, ip="")
        kakao_user, access, refresh = fakes.kakao.connect()
        kakao = await channels.add_kakao(
            s,
            user.id,
            str(kakao_user),
            encode_tokens(KakaoTokens(access, refresh, utcnow() + timedelta(hours=6))),
        )
        for row in (tg, dc, wp, fcm, kakao):
            ch = await s.get(NotificationChannel, row.id)
            ch.verified = True
            s.add(ch)
        await s.commit()
        targets.update(
            telegram=f"telegram:{tg.id}",
            discord=f"discord:{dc.id}",
            webpush=f"webpush:{wp.id}",
            fcm=f"fcm:{fcm.id}",
            kakao=f"kakao:{kakao.id}",
        )
        rule = await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="above", level="50000"
        )
        now = utcnow()
        for start in range(0, ALERTS, 200):
            events = [
                AlertEvent(
                    idempotency_key=f"crash:{i}",
                    rule_id=rule.id,
                    user_id=user.id,
                    symbol="005930",
                    price=PRICE0 + i,
                    payload={
                        "symbol": "005930",
                        "name_ko": "삼성전자",
                        "name_en": "Samsung Electronics",
                        "op": "above",
                        "level": 50_000,
                        "price": PRICE0 + i,
                    },
                    fired_at=now,
                )
                for i in range(start, start + 200)
            ]
            s.add_all(events)
            await s.flush()
            s.add_all(
                Delivery(event_id=e.id, user_id=user.id, channel=t, next_attempt_at=now)
                for e in events
                for t in targets.values()
            )
            await s.commit()
    return targets


def _deliver(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "deliver"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _open_count() -> int:
    async with db.session() as s:
        return (
            await s.exec(
                select(func.count())
                .select_from(Delivery)
                .where(col(Delivery.status).in_(["pending", "sending"]))
            )
        ).one()


async def test_sigkill_mid_delivery_loses_nothing_and_doubles_only_the_send_in_flight(
    database, smtp_server, tmp_path, report_figures, monkeypatch
):
    key = os.urandom(32)
    set_key_ring(KeyRing({"crash": key}, "crash"))
    fakes = Fakes(smtp_server, tmp_path)
    log_path = tmp_path / "deliver.log"
    # This process validates the addresses as the app would, against the same fakes.
    monkeypatch.setenv("DISCORD_API_BASE", fakes.servers[1].base_url)
    monkeypatch.setenv("APP_BASE_URL", "http://127.0.0.1:3000")
    get_settings.cache_clear()
    try:
        targets = await _seed(fakes)
        env = _env(database, fakes, key)
        total = ALERTS * len(targets)

        first = _deliver(env, log_path)
        deadline = time.monotonic() + 120
        try:
            while sum(map(len, fakes.received().values())) < total * 0.4:
                assert first.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, (
                    fakes.received_counts(),
                    log_path.read_text()[-3000:],
                )
                time.sleep(0.02)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        time.sleep(0.3)  # anything the kernel still had in flight lands
        at_kill = {k: len(v) for k, v in fakes.received().items()}
        assert 0 < sum(at_kill.values()) < total, at_kill

        second = _deliver(env, log_path)
        try:
            while await _open_count():
                assert second.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline + 180, "restart did not finish"
                time.sleep(0.05)
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(timeout=30)
            except subprocess.TimeoutExpired:
                second.kill()
                raise
        assert second.returncode == 0, log_path.read_text()

        async with db.session() as s:
            rows = (await s.exec(select(Delivery, AlertEvent).join(AlertEvent))).all()
        assert {d.status for d, _ in rows} == {"sent"}
        resumed = {(d.channel, e.price - PRICE0) for d, e in rows if d.resumed}
        received = fakes.received()
        figures: dict[str, object] = {"alerts": ALERTS, "at_kill": at_kill}
        for kind, channel in targets.items():
            got = received[kind]
            assert set(got) == set(range(ALERTS)), f"{kind} lost {set(range(ALERTS)) - set(got)}"
            doubled = sorted({i for i in got if got.count(i) > 1})
            assert all((channel, i) in resumed for i in doubled), (kind, doubled, resumed)
            flagged = sum(1 for c, _ in resumed if c == channel)
            assert flagged <= 1  # one claim per send: at most one was in flight
            assert len(got) - ALERTS == len(doubled) <= flagged
            figures[kind] = {"received": len(got), "doubled": len(doubled), "resumed": flagged}
        # What a person sees: a resend carries the same Message-ID (mail clients show
        # one message), the same notification tag (the phone replaces the first).
        assert len({m["Message-ID"] for m in fakes.smtp.messages}) == ALERTS
        assert len({r.payload["tag"] for r in fakes.push.received}) == ALERTS
        assert len({b["message"]["data"]["tag"] for b in fakes.fcm.sent}) == ALERTS
        assert "Traceback" not in log_path.read_text()
        figures["resumed_rows"] = len(resumed)
        report_figures(**figures)
    finally:
        fakes.stop()
        get_settings.cache_clear()
