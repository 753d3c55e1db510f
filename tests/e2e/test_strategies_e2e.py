"""Strategies and backtests in real Chromium against the production build, at a desktop
and at a phone width, as a user of its own (signed in through the local "Google"):

1. the catalogue lists the built-ins; "new" on the MA cross opens the editor with the
   params form generated from its fields, defaults filled in;
2. bad params first: a fast average not shorter than the slow one puts the catalog's
   message beside the field and keeps "save" disabled; fixed, it saves;
3. the config runs on a demo symbol in paper mode;
4. its backtest over the demo's stored daily history: the progress bar, then the
   metric cards, the equity/drawdown chart, the trades on the price chart and the
   trade table;
5. a small optimisation shows its ranked table, and its "use these" opens the editor;
6. the parity report of the paper attachment.

The phone run switches the page to English first, so both languages are seen. At
390 px no page scrolls sideways.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Browser, Page, expect

from app.i18n import catalog
from tests.e2e.conftest import RunningApp
from tests.e2e.ui import no_horizontal_scroll, shot
from tests.oidc_provider import TestUser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

WAIT = 30_000  # ms, for anything that needs a round trip through the app
JOB_WAIT = 120_000  # a backtest job: the first one also starts the worker processes


async def _sign_in_as(page: Page, running_app: RunningApp, user: TestUser) -> None:
    base = running_app.base_url
    running_app.op.user = user
    await page.goto(f"{base}/login")
    google = page.locator("#oauth-google")
    await expect(google).to_be_visible(timeout=60_000)
    await google.click()
    await page.wait_for_url(f"{base}/", timeout=60_000)


@pytest.mark.parametrize("width", [1280, 390])
async def test_strategy_from_catalogue_to_backtest_and_optimisation(
    running_app: RunningApp, browser: Browser, width: int
):
    base = running_app.base_url
    ctx = await browser.new_context(
        viewport={"width": width, "height": 900}, locale="ko-KR", is_mobile=width < 500
    )
    page = await ctx.new_page()
    user = TestUser(
        sub=f"e2e-strategies-{width}",
        email=f"strategies.e2e.{width}@example.com",
        name=f"Strategies {width}",
    )
    await _sign_in_as(page, running_app, user)

    await page.goto(f"{base}/strategies")
    new_ma = page.locator("#sp-new-ma_cross")
    await expect(new_ma).to_be_visible(timeout=WAIT)  # the catalogue came from the state
    lang = "ko"
    if width < 500:
        toggle = page.locator("#lang-toggle")
        await toggle.click()
        # the switch is stored (cookie and profile) once the button names the other language
        await expect(toggle).to_have_text(catalog("en")["nav.language"], timeout=WAIT)
        lang = "en"
        await page.reload()  # the catalogue's texts are the server's: load them in English
        await expect(new_ma).to_be_visible(timeout=WAIT)
    texts = catalog(lang)
    await expect(page.locator("#sp-catalogue")).to_contain_text(
        texts["strategy.ma_cross.title"], timeout=WAIT
    )
    await expect(page.locator(".sp-catalogue-card")).to_have_count(6, timeout=WAIT)
    await no_horizontal_scroll(page, width)

    # 1-2. the editor, generated from the params model; bad params first
    await new_ma.click()
    editor = page.locator("#sp-editor")
    await expect(editor).to_be_visible(timeout=WAIT)
    await expect(page.locator("#sp-fast")).to_have_value("20")
    await expect(page.locator("#sp-slow")).to_have_value("60")
    await expect(page.locator("#sp-fast")).to_have_attribute("min", "5")
    await expect(page.locator("#sp-kind")).to_have_value("sma")
    save = page.locator("#sp-save")
    await expect(save).to_be_disabled()  # no name yet
    label = f"E2E cross {width}"
    await page.fill("#sp-label", label)
    await expect(save).to_be_enabled(timeout=WAIT)

    await page.fill("#sp-fast", "60")
    message = texts["error.strategy_fast_not_shorter"].format(fast=60, slow=60)
    errors = editor.locator("[id^='sp-error-']", has_text=message)
    await expect(errors).to_have_count(1, timeout=WAIT)
    await expect(save).to_be_disabled()
    await shot(page, "strategy-editor-error", width)

    await page.fill("#sp-fast", "5")
    await page.fill("#sp-slow", "20")
    await expect(errors).to_have_count(0, timeout=WAIT)
    await expect(save).to_be_enabled(timeout=WAIT)
    await save.click()
    await expect(page.locator("#sp-notice")).to_have_text(texts["sp.saved_new"], timeout=WAIT)
    await expect(editor).to_have_count(0)
    card = page.locator(".sp-config", has_text=label)
    await expect(card).to_be_visible()
    config_id = await card.get_attribute("data-id")
    assert config_id and config_id.isdigit()

    # 3. run it on a demo symbol, on the paper account
    await page.fill(f"#sp-attach-symbol-{config_id}", "005930")
    await page.select_option(f"#sp-attach-mode-{config_id}", "paper")
    await page.click(f"#sp-attach-{config_id}")
    attachment = card.locator('.sp-attachment[data-symbol="005930"]')
    await expect(attachment).to_be_visible(timeout=WAIT)
    att_id = await attachment.get_attribute("data-id")
    await expect(page.locator(f"#sp-mode-{att_id}")).to_have_value("paper")
    await asyncio.sleep(0.3)
    await no_horizontal_scroll(page, width)
    await shot(page, "strategies", width)

    # 4. its backtest on the demo's stored history
    await page.click(f"#sp-backtest-{config_id}")
    await page.wait_for_url(re.compile(rf"/backtest\?config={config_id}$"), timeout=WAIT)
    symbols = page.locator("#bt-symbols")
    await expect(symbols).to_have_value("005930", timeout=WAIT)  # the attached symbol
    await page.click("#bt-run")
    await expect(page.locator("#bt-progress")).to_be_visible(timeout=WAIT)
    metrics = page.locator("#bt-metrics .bt-metric")
    await expect(metrics.first).to_be_visible(timeout=JOB_WAIT)
    assert await metrics.count() >= 12
    total = page.locator('#bt-metrics .bt-metric[data-key="total_return"]')
    await expect(total).to_contain_text(texts["bt.metric.total_return"])
    await expect(total).to_contain_text(re.compile(r"[+-]\d+\.\d\d%"))
    equity = page.locator("#bt-equity-chart")
    await expect(equity.locator("g.scatterlayer g.trace").first).to_be_attached(timeout=WAIT)
    price = page.locator("#bt-price-chart")
    await expect(price.locator("g.trace.boxes path").first).to_be_attached(timeout=WAIT)
    trades = page.locator("#bt-trades .bt-trade")
    await expect(trades.first).to_be_visible(timeout=WAIT)
    n_trades = await trades.count()
    markers = await price.locator("g.scatterlayer .point").count()
    assert markers >= n_trades  # an entry marker per trade, and exits
    await expect(trades.first).to_contain_text("005930")
    await expect(page.locator("#bt-watch")).to_have_count(0)  # the bar is gone when done
    await asyncio.sleep(0.5)
    await no_horizontal_scroll(page, width)
    await shot(page, "backtest", width)

    # 5. a small optimisation and its ranked table
    await page.click("#bt-tab-optimize")
    await page.fill("#bt-max-runs", "4")
    await page.click("#bt-run-opt")
    rows = page.locator("#bt-opt-table .bt-opt-row")
    await expect(rows.first).to_be_visible(timeout=JOB_WAIT)
    assert 1 <= await rows.count() <= 4
    await expect(rows.first.locator(".bt-use-params")).to_have_attribute(
        "href", re.compile(r"/strategies\?use_run=\d+&row=0$")
    )
    await expect(page.locator("#bt-opt-note")).to_be_visible()
    await asyncio.sleep(0.5)
    await no_horizontal_scroll(page, width)
    await shot(page, "optimisation", width)

    # 6. the parity report of the paper attachment: nothing traded yet, so every
    # backtest signal of the last 30 days is "missed", and the page says why gaps happen
    await page.click("#bt-tab-parity")
    await expect(page.locator("#bt-attachment")).to_have_value(att_id or "")
    await page.fill("#bt-days", "30")
    await page.click("#bt-run-parity")
    summary = page.locator("#bt-parity-summary .bt-metric")
    await expect(summary.first).to_be_visible(timeout=JOB_WAIT)
    await expect(page.locator('#bt-parity-summary [data-key="matched"]')).to_contain_text("0")
    await expect(page.locator("#bt-tab-parity")).to_have_attribute("data-state", "active")
    await expect(page.get_by_text(texts["bt.parity.gaps_title"])).to_be_visible()
    await asyncio.sleep(0.3)
    await no_horizontal_scroll(page, width)
    await shot(page, "parity", width)

    # "use these" opens the editor with that row's params
    await page.click("#bt-tab-optimize")
    await rows.first.locator(".bt-use-params").click()
    await page.wait_for_url(re.compile(r"/strategies\?use_run="), timeout=WAIT)
    await expect(page.locator("#sp-editor")).to_be_visible(timeout=WAIT)
    await expect(page.locator("#sp-notice")).to_have_text(texts["sp.params_from_run"])
    await expect(page.locator("#sp-label")).to_have_value(label)
    await ctx.close()
