"""Start the production build (`python -m app.serve`, i.e. `reflex run --env prod`) on a free
port, like `make run` does."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from playwright.async_api import Browser, async_playwright

from tests.conftest import SmtpSink, free_port
from tests.discord_fake import DiscordFake
from tests.kis_fake import KisFake
from tests.oidc_provider import LocalOP, OPClient
from tests.telegram_fake import TelegramFake

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DEMO_PASSWORD = "e2e-demo-Passw0rd"
# Canary broker credentials: the only pair the KIS fake accepts, and strings that must
# never appear in a frame, a log or a file (test_accounts_e2e.py).
KIS_APP_KEY = "PSCANARY" + secrets.token_hex(14).upper()
KIS_APP_SECRET = "CANARYSECRET" + secrets.token_hex(40)
GOOGLE_CLIENT_ID = "e2e-google-client"
GOOGLE_CLIENT_SECRET = "e2e-google-secret"


@dataclass
class RunningApp:
    base_url: str
    smtp: SmtpSink
    log_path: Path
    op: LocalOP  # the "Google" the app is configured with: a local OpenID provider
    db_path: Path
    kis: KisFake
    # The operator's Telegram bot and Discord's webhook endpoint (test_channels_e2e.py)
    telegram: TelegramFake = field(default_factory=TelegramFake)
    discord: DiscordFake = field(default_factory=DiscordFake)
    discord_base_url: str = ""


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited early:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"app did not answer {url} in {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def running_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    work = tmp_path_factory.mktemp("e2e")
    db_path = work / "e2e.db"
    port = free_port()
    smtp = SmtpSink("127.0.0.1", free_port())
    controller = Controller(smtp, hostname=smtp.host, port=smtp.port)
    controller.start()
    op = LocalOP().start()
    kis = KisFake(app_keys={KIS_APP_KEY: KIS_APP_SECRET})
    kis_server = kis.serve()
    telegram = TelegramFake()
    telegram_server = telegram.serve()
    discord = DiscordFake()
    discord_server = discord.serve()
    op.add_client(
        OPClient(
            GOOGLE_CLIENT_ID,
            GOOGLE_CLIENT_SECRET,
            [f"http://localhost:{port}/auth/callback/google"],
        )
    )
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db_path}",
        "APP_BASE_URL": f"http://localhost:{port}",
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "DEMO_PASSWORD": DEMO_PASSWORD,
        # an explicit throw-away vault key: the e2e app never writes data/vault-keys.json
        "VAULT_KEYS": "e2e:" + base64.b64encode(os.urandom(32)).decode(),
        "VAULT_ACTIVE_KEY": "e2e",
        "MARKET_TICK_INTERVAL": "0.1",
        "UI_PUSH_INTERVAL": "0.3",
        "RULE_SYNC_INTERVAL": "0.5",
        "DELIVERY_POLL_INTERVAL": "0.5",
        "KIS_PAPER_BASE_URL": kis_server.base_url,
        "KIS_REAL_BASE_URL": kis_server.base_url,
        "GOOGLE_CLIENT_ID": GOOGLE_CLIENT_ID,
        "GOOGLE_CLIENT_SECRET": GOOGLE_CLIENT_SECRET,
        "GOOGLE_DISCOVERY_URL": op.discovery_url,
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_BOT_USERNAME": telegram.bot_username,
        "TELEGRAM_API_BASE": telegram_server.base_url,
        "DISCORD_API_BASE": discord_server.base_url,
        "PATH": f"{ROOT / '.tools' / 'node_modules' / '.bin'}:{os.environ.get('PATH', '')}",
        "REFLEX_USE_SYSTEM_BUN": "1",
        "REFLEX_CHECK_LATEST_VERSION": "0",
        "REFLEX_TELEMETRY_ENABLED": "0",
        "NPM_CONFIG_REGISTRY": os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org/"),
    }
    for cmd in (["migrate"], ["seed-demo"]):
        subprocess.run([sys.executable, "-m", "app.cli", *cmd], cwd=ROOT, env=env, check=True)
    log = work / "app.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.serve",  # what `make run` runs: reflex run --env prod, workers respawned
                "--frontend-port",
                str(port),
                "--backend-port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", 600, proc, log)
        _wait_http(f"http://127.0.0.1:{port}/login", 120, proc, log)
        yield RunningApp(
            base_url=f"http://localhost:{port}",
            smtp=smtp,
            log_path=log,
            op=op,
            db_path=db_path,
            kis=kis,
            telegram=telegram,
            discord=discord,
            discord_base_url=discord_server.base_url,
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        controller.stop()
        op.stop()
        kis_server.stop()
        telegram_server.stop()
        discord_server.stop()
        (ARTIFACTS / "app.log").write_text(log.read_text())


@pytest.fixture
async def browser() -> Browser:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()
