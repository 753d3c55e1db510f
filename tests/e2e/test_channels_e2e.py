"""Notification channels (/settings/channels) in real Chromium against the production build.

The session app (tests/e2e/conftest.py) sends its mail to aiosmtpd and talks to
loopback fakes of Telegram's Bot API (tests/telegram_fake.py, the operator's bot)
and of Discord's webhook endpoint (tests/discord_fake.py). At a desktop and at a
phone width, as a user of its own (signed in through the local "Google", so the
demo user's channels, which the walking skeleton's alert is delivered to, stay
untouched):

1. bad input is refused with the catalog's text and saves nothing: a URL that is
   not a Discord webhook, a malformed e-mail address, an address the mail server
   refuses (the verification mail cannot be sent), a malformed chat id, a bot
   token Telegram rejects;
2. an extra e-mail address is listed unverified; its verification mail arrives,
   and opening its link in the same tab lands on the page with the verified
   notice and the channel on;
3. Telegram is linked by a one-time code: "Check" says "not yet" until the chat
   sends ``/start CODE`` to the bot, then a verified Telegram row appears;
4. a Discord webhook is added, "Send a test" reaches Discord once, the channel is
   switched off and deleted;
5. no webhook token and no bot token ever reaches the page, a websocket frame,
   the app log or the database in plaintext.

At 390 px the page never scrolls sideways.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Iterator
from email.message import Message as EmailMsg

import pytest
from playwright.async_api import Browser, Locator, Page, WebSocket, expect

from app.i18n import catalog
from tests.e2e.conftest import RunningApp
from tests.e2e.ui import shot
from tests.oidc_provider import TestUser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

KO = catalog("ko")  # the users below sign in from a ko-KR browser: the page speaks Korean
MASK = "••••"
WAIT = 30_000  # ms, for anything that needs a round trip through the app
DISCORD_NOT_A_WEBHOOK = KO["error.channel_discord_url"].format(
    reason="the webhook URL must be on discord.com (or discordapp.com)"
)


@pytest.fixture
def mail_of_this_test(running_app: RunningApp) -> Iterator[set[str]]:
    """Addresses this test mails (or has refused). The SMTP sink is the session's: the
    walking skeleton counts the mails in it, so this test's mails leave it afterwards."""
    addresses: set[str] = set()
    yield addresses
    sink = running_app.smtp
    keep = [i for i, (_, rcpts) in enumerate(sink.envelopes) if not addresses & set(rcpts)]
    sink.messages[:] = [sink.messages[i] for i in keep]
    sink.envelopes[:] = [sink.envelopes[i] for i in keep]
    sink.reject -= addresses


def _rows(page: Page) -> Locator:
    return page.locator("#ch-list .ch-row")


def _row(page: Page, kind_key: str) -> Locator:
    return page.locator("#ch-list .ch-row", has_text=KO[kind_key])


async def _row_id(row: Locator) -> str:
    button = await row.locator("[id^='ch-delete-']").get_attribute("id")
    assert button, "the row has no delete button"
    return button.removeprefix("ch-delete-")


async def _fits(page: Page, width: int) -> None:
    """At phone width nothing may make the page scroll sideways."""
    if width > 400:
        return
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width + 1, f"/settings/channels is {scroll}px wide at a {width}px viewport"


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        await asyncio.sleep(0.1)


async def _mail_to(running_app: RunningApp, address: str) -> EmailMsg:
    sink = running_app.smtp

    def found() -> list[EmailMsg]:
        return [
            m
            for (_, rcpts), m in zip(sink.envelopes, sink.messages, strict=False)
            if address in rcpts
        ]

    await _until(lambda: bool(found()), f"a mail to {address}")
    mails = found()
    assert len(mails) == 1, f"{len(mails)} mails to {address}"
    return mails[0]


async def _sign_in_as(page: Page, running_app: RunningApp, user: TestUser) -> None:
    """Sign in through the local OpenID provider, which creates ``user`` on first use."""
    base = running_app.base_url
    running_app.op.user = user
    await page.goto(f"{base}/login")
    google = page.locator("#oauth-google")
    await expect(google).to_be_visible(timeout=60_000)
    await google.click()
    await page.wait_for_url(f"{base}/", timeout=60_000)


async def _open_channels_page(page: Page, base: str, frames: list[str]) -> None:
    """Open the page and wait until its on_load reached the browser: before that the
    prerendered forms are not wired to the app yet (a click would submit natively)."""
    seen = len(frames)
    await page.goto(f"{base}/settings/channels")
    await expect(page.locator("#ch-list")).to_be_visible(timeout=WAIT)
    await _until(
        lambda: any("channels_state" in f for f in frames[seen:]), "the channels page's state"
    )


@pytest.mark.parametrize("width", [1280, 390])
async def test_channels_page(
    running_app: RunningApp,
    browser: Browser,
    mail_of_this_test: set[str],
    width: int,
) -> None:
    base = running_app.base_url
    telegram, discord = running_app.telegram, running_app.discord
    phone = width < 400
    user = TestUser(
        sub=f"e2e-channels-{width}",
        email=f"channels.e2e.{width}@example.com",
        name=f"Channels {width}",
    )
    extra_email = f"alerts.{width}@example.net"
    refused_email = f"nobody.{width}@example.net"
    mail_of_this_test.update({extra_email, refused_email})
    chat_id = 700_000_000 + width
    # A bot token of the right form that the fake Telegram does not know (401).
    rejected_bot_token = f"{5_550_000 + width}:" + secrets.token_urlsafe(27)[:35]
    webhook_id = f"13370000000000{width:04d}"
    webhook_token = "e2eCanary" + secrets.token_urlsafe(30)
    webhook_url = f"{running_app.discord_base_url}/api/webhooks/{webhook_id}/{webhook_token}"
    discord.add_webhook(webhook_id, webhook_token)
    never_shown = {
        "discord webhook token": webhook_token,
        "operator bot token": telegram.token,
        "rejected bot token": rejected_bot_token,
    }

    ctx = await browser.new_context(
        viewport={"width": width, "height": 844 if phone else 900},
        locale="ko-KR",
        is_mobile=phone,
        has_touch=phone,
    )
    page = await ctx.new_page()
    frames: list[str] = []

    def on_ws(ws: WebSocket) -> None:
        ws.on("framereceived", lambda payload: frames.append(str(payload)))

    page.on("websocket", on_ws)
    pages_html: list[str] = []
    try:
        await _sign_in_as(page, running_app, user)
        await _open_channels_page(page, base, frames)
        await expect(page.get_by_role("heading", name=KO["channels.title"])).to_be_visible()
        await expect(page.locator("#ch-list")).to_have_text(KO["channels.empty"])
        await _fits(page, width)

        # --- 1. bad input: a clear error, nothing saved ----------------------------------
        await page.fill("#ch-address", "https://example.com/hook")
        await page.click("#ch-add")
        await expect(page.locator("#ch-error-address")).to_have_text(
            DISCORD_NOT_A_WEBHOOK, timeout=WAIT
        )
        await expect(_rows(page)).to_have_count(0)
        await _fits(page, width)

        await page.fill("#ch-email-address", "not-an-address@")
        await page.click("#ch-email-add")
        await expect(page.locator("#ch-email-error-address")).to_have_text(
            KO["error.channel_email_invalid"], timeout=WAIT
        )
        await expect(_rows(page)).to_have_count(0)

        # the mail server refuses the recipient: the verification mail cannot go out
        running_app.smtp.reject.add(refused_email)
        await page.fill("#ch-email-address", refused_email)
        await page.click("#ch-email-add")
        await expect(page.locator("#ch-email-error-address")).to_have_text(
            KO["error.channel_email_refused"], timeout=WAIT
        )
        await expect(_rows(page)).to_have_count(0)
        running_app.smtp.reject.discard(refused_email)

        await page.fill("#ch-tg-chat", "@my_channel")
        await page.click("#ch-tg-add")
        await expect(page.locator("#ch-tg-error-address")).to_have_text(
            KO["error.channel_telegram_chat_id"], timeout=WAIT
        )
        await page.fill("#ch-tg-chat", "123456789")
        await page.fill("#ch-tg-token", rejected_bot_token)
        await page.click("#ch-tg-add")
        await expect(page.locator("#ch-tg-error-token")).to_have_text(
            KO["error.channel_telegram_bot_rejected"], timeout=WAIT
        )
        await expect(page.locator("#ch-tg-error-address")).to_have_count(0)
        await expect(_rows(page)).to_have_count(0)
        await _fits(page, width)
        await shot(page, "channels-errors", width)

        # the server kept nothing either
        await _open_channels_page(page, base, frames)
        await expect(page.locator("#ch-list")).to_have_text(KO["channels.empty"])
        await expect(page.locator("[id^='ch-'][role=alert]")).to_have_count(0)
        assert not [rcpts for _, rcpts in running_app.smtp.envelopes if refused_email in rcpts]

        # --- 2. an extra e-mail address, verified through its link -----------------------
        hint = f"{extra_email[:2]}{MASK}@example.net"
        await page.fill("#ch-email-address", extra_email)
        await page.fill("#ch-email-label", "work")
        await page.click("#ch-email-add")
        await expect(page.locator("#ch-notice")).to_have_text(
            KO["channels.email.sent"].format(hint=hint, hours=24), timeout=WAIT
        )
        email_row = _row(page, "channels.kind.email_extra")
        await expect(email_row).to_have_count(1)
        await expect(email_row).to_contain_text(f"{KO['channels.kind.email_extra']} · work")
        await expect(email_row).to_contain_text(hint)
        await expect(email_row.locator(".rt-Badge")).to_have_text(KO["channels.state.unverified"])
        email_id = await _row_id(email_row)
        await expect(page.locator(f"#ch-resend-{email_id}")).to_be_visible()
        await expect(page.locator(f"#ch-test-{email_id}")).to_have_count(0)
        assert await page.input_value("#ch-email-address") == ""  # the form was reset
        await _fits(page, width)

        mail = await _mail_to(running_app, extra_email)
        assert mail["Subject"] == KO["channels.email.verify_subject"]
        body = mail.get_body(preferencelist=("plain",))
        assert body is not None
        links = re.findall(
            rf"{re.escape(base)}/api/channels/verify-email\?token=[A-Za-z0-9._~%-]+",
            body.get_content(),
        )
        assert len(links) == 1, body.get_content()
        await page.goto(links[0])
        await page.wait_for_url(re.compile(r"/settings/channels/?\?verified=email$"), timeout=WAIT)
        await expect(page.locator("#ch-notice")).to_have_text(
            KO["channels.verified.email"], timeout=WAIT
        )
        email_row = _row(page, "channels.kind.email_extra")
        await expect(email_row.locator(".rt-Badge")).to_have_text(
            KO["channels.state.on"], timeout=WAIT
        )
        await expect(page.locator(f"#ch-resend-{email_id}")).to_have_count(0)
        await expect(page.locator(f"#ch-test-{email_id}")).to_be_visible()
        assert "token=" not in page.url

        # --- 3. Telegram, linked by a one-time code --------------------------------------
        await page.click("#ch-tg-link")
        code_box = page.locator("#ch-tg-code")
        await expect(code_box).to_have_text(re.compile(r"^/start [A-Z2-9]{8}$"), timeout=WAIT)
        code = (await code_box.inner_text()).split()[-1]
        await expect(page.locator("#ch-tg-open")).to_have_attribute(
            "href", f"https://t.me/{telegram.bot_username}?start={code}"
        )
        await expect(page.locator("#ch-telegram")).to_contain_text(
            KO["channels.telegram.or_send"].format(bot=telegram.bot_username)
        )
        await _fits(page, width)
        await shot(page, "channels-telegram-code", width)

        await page.click("#ch-tg-check")  # nothing sent to the bot yet
        await expect(page.locator("#ch-tg-status")).to_have_text(
            KO["channels.telegram.waiting"], timeout=WAIT
        )
        await expect(_rows(page)).to_have_count(1)

        telegram.push_start(chat_id, code)
        await page.click("#ch-tg-check")
        await expect(page.locator("#ch-notice")).to_have_text(
            KO["channels.telegram.linked"], timeout=WAIT
        )
        tg_row = _row(page, "channels.kind.telegram")
        await expect(tg_row).to_have_count(1)
        await expect(tg_row).to_contain_text(f"chat {MASK}{str(chat_id)[-4:]}")
        await expect(tg_row.locator(".rt-Badge")).to_have_text(KO["channels.state.on"])
        await expect(page.locator("#ch-tg-code")).to_have_count(0)
        await expect(page.locator("#ch-tg-link")).to_be_visible()
        await expect(_rows(page)).to_have_count(2)

        # --- 4. Discord: add, test, switch off, delete -----------------------------------
        await page.fill("#ch-address", webhook_url)
        await page.fill("#ch-label", "alerts")
        await page.click("#ch-add")
        await expect(page.locator("#ch-notice")).to_have_text(KO["channels.added"], timeout=WAIT)
        dc_row = _row(page, "channels.kind.discord")
        await expect(dc_row).to_have_count(1)
        await expect(dc_row).to_contain_text(f"{KO['channels.kind.discord']} · alerts")
        await expect(dc_row).to_contain_text(f"webhook {MASK}{webhook_id[-4:]}")
        await expect(dc_row.locator(".rt-Badge")).to_have_text(KO["channels.state.on"])
        await expect(page.locator("#ch-error-address")).to_have_count(0)
        assert await page.input_value("#ch-address") == ""  # write-only: the URL is gone
        await _fits(page, width)
        await shot(page, "channels", width)
        pages_html.append(await page.content())

        dc_id = await _row_id(dc_row)
        before = len([p for p in discord.posted if p.webhook_id == webhook_id])
        assert before == 0
        await page.click(f"#ch-test-{dc_id}")
        await expect(page.locator("#ch-notice")).to_have_text(
            KO["channels.test.sent"], timeout=WAIT
        )
        posted = [p for p in discord.posted if p.webhook_id == webhook_id]
        assert len(posted) == 1, discord.statuses()
        assert KO["channels.test.text"] in str(posted[0].payload)
        pages_html.append(await page.content())

        toggle = page.locator(f"#ch-toggle-{dc_id}")
        await expect(toggle).to_have_text(KO["channels.turn_off"])
        await toggle.click()
        await expect(dc_row.locator(".rt-Badge")).to_have_text(
            KO["channels.state.off"], timeout=WAIT
        )
        await expect(toggle).to_have_text(KO["channels.turn_on"])
        # the other channels are untouched
        await expect(email_row.locator(".rt-Badge")).to_have_text(KO["channels.state.on"])
        await expect(tg_row.locator(".rt-Badge")).to_have_text(KO["channels.state.on"])

        await page.click(f"#ch-delete-{dc_id}")
        await expect(page.locator("#ch-notice")).to_have_text(KO["channels.deleted"], timeout=WAIT)
        await expect(dc_row).to_have_count(0)
        await expect(_rows(page)).to_have_count(2)
        await _fits(page, width)

        # and after a reload the list is what the server has
        await _open_channels_page(page, base, frames)
        await expect(_rows(page)).to_have_count(2, timeout=WAIT)
        await expect(_row(page, "channels.kind.discord")).to_have_count(0)
        await _fits(page, width)
        pages_html.append(await page.content())

        # --- 5. no token ever came back --------------------------------------------------
        # positive control: the frames carried the Discord row (its masked hint)
        assert [f for f in frames if f"webhook {MASK}{webhook_id[-4:]}" in f], "no row frames"
        log_text = running_app.log_path.read_text(errors="replace")
        db_bytes = b"".join(p.read_bytes() for p in running_app.db_path.parent.glob("e2e.db*"))
        for name, value in never_shown.items():
            assert not [f for f in frames if value in f], f"the {name} came in a websocket frame"
            assert not [h for h in pages_html if value in h], f"the {name} is in the page"
            assert value not in log_text, f"the {name} is in the app log"
            assert value.encode() not in db_bytes, f"the {name} is stored in plaintext"
        assert not [f for f in frames if extra_email in f], "the full address came back"
    finally:
        await ctx.close()
