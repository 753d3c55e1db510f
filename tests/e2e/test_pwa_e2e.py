"""The installable app in real Chromium against the production build.

What a phone user relies on and a unit test cannot see: the browser finds a
valid manifest through the page's link, the service worker controls the whole
site, a web push becomes a notification (one per tag, not a stack of
duplicates), the app shell opens with the network off, and the "install app"
button appears only while the browser offers installation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import Browser, BrowserContext, CDPSession, Page, expect

from tests.e2e.conftest import RunningApp
from tests.e2e.ui import shot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

APP_NAME_KO = "틱워치"
BRAND = "a[href='/'] h1"  # the navbar's app name, prerendered into the shell
SW_READY = "navigator.serviceWorker.ready.then(r => r.scope)"
CACHED_URLS = """async () => {
  const out = {};
  for (const name of await caches.keys()) {
    const cache = await caches.open(name);
    out[name] = (await cache.keys()).map(r => r.url);
  }
  return out;
}"""
NOTIFICATIONS = """async (tag) => {
  const reg = await navigator.serviceWorker.ready;
  return (await reg.getNotifications({tag})).map(n => ({
    title: n.title, body: n.body, tag: n.tag, data: n.data, icon: n.icon, badge: n.badge,
  }));
}"""
# A stand-in for Chrome's BeforeInstallPromptEvent, which headless Chromium never fires.
FAKE_INSTALL_OFFER = """() => {
  window.__promptCalls = window.__promptCalls || 0;
  const offer = new Event('beforeinstallprompt', {cancelable: true});
  offer.prompt = () => { window.__promptCalls += 1; return Promise.resolve(); };
  offer.userChoice = Promise.resolve({outcome: 'accepted', platform: 'web'});
  window.dispatchEvent(offer);
  return offer.defaultPrevented;
}"""


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="ko-KR")
    try:
        yield ctx
    finally:
        await ctx.close()


async def _controlled_page(ctx: BrowserContext, url: str) -> Page:
    """A page at ``url`` once the service worker is active and controls it."""
    page = await ctx.new_page()
    await page.goto(url)
    await asyncio.wait_for(page.evaluate(SW_READY), 30)
    await _until(page, "navigator.serviceWorker.controller !== null", 30)
    return page


async def _until(page: Page, expression: str, timeout: float) -> None:
    """Poll with ``evaluate``: ``wait_for_function`` re-evaluates a string in the page,
    which the app's CSP (no 'unsafe-eval') refuses once the first check is false."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await page.evaluate(expression):
        if loop.time() > deadline:
            raise AssertionError(f"{expression} still false after {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def _signed_in(ctx: BrowserContext, base: str) -> Page:
    page = await ctx.new_page()
    await sign_in(page, base)
    await page.wait_for_url(f"{base}/", timeout=60_000)
    await expect(page.locator("#lang-toggle")).to_be_visible(timeout=30_000)
    await asyncio.wait_for(page.evaluate(SW_READY), 30)
    await _until(page, "navigator.serviceWorker.controller !== null", 30)
    return page


async def test_manifest_is_linked_valid_and_its_icons_are_served(
    running_app: RunningApp, context: BrowserContext
) -> None:
    base = running_app.base_url
    page = await context.new_page()
    csp_errors: list[str] = []
    page.on(
        "console",
        lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    await page.goto(f"{base}/login")
    href = await page.get_attribute("link[rel=manifest]", "href")
    assert href == "/manifest.json"

    response = await page.request.get(f"{base}{href}")
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    manifest = json.loads(await response.text())
    assert manifest["id"] == "/"
    assert manifest["start_url"] == "/"
    assert manifest["scope"] == "/"
    assert manifest["display"] == "standalone"
    assert manifest["short_name"] == "Tickwatch"
    assert manifest["theme_color"] == "#3e63dd"
    purposes = {(i["sizes"], i.get("purpose", "any")) for i in manifest["icons"]}
    assert {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")} <= purposes
    for icon in manifest["icons"]:
        served = await page.request.get(f"{base}{icon['src']}")
        assert served.status == 200, icon["src"]
        assert served.headers["content-type"] == "image/png", icon["src"]

    # pwa.js ran under the strict CSP and registered the worker for the whole site
    assert await asyncio.wait_for(page.evaluate(SW_READY), 30) == f"{base}/"
    script = await page.evaluate("navigator.serviceWorker.ready.then(r => r.active.scriptURL)")
    assert script == f"{base}/sw.js"
    assert await page.evaluate("typeof window.tickwatchPush.subscribe") == "function"
    assert not csp_errors, csp_errors


async def _registration_id(cdp: CDPSession, scope: str) -> str:
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_update(params: dict) -> None:
        for reg in params["registrations"]:
            if reg["scopeURL"] == scope and not reg["isDeleted"] and not found.done():
                found.set_result(reg["registrationId"])

    cdp.on("ServiceWorker.workerRegistrationUpdated", on_update)
    await cdp.send("ServiceWorker.enable")
    return await asyncio.wait_for(found, 30)


async def _push(cdp: CDPSession, origin: str, reg_id: str, payload: dict) -> None:
    await cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": origin, "registrationId": reg_id, "data": json.dumps(payload)},
    )


async def _notifications(page: Page, tag: str, bodies: list[str]) -> list[dict]:
    """The notifications with ``tag`` once their bodies are exactly ``bodies``.

    Push delivery and the tag replacement are asynchronous, so this waits for the
    expected end state (up to 20 s) instead of judging the first snapshot.
    """
    shown: list[dict] = []
    for _ in range(200):
        shown = await page.evaluate(NOTIFICATIONS, tag)
        if [n["body"] for n in shown] == bodies:
            return shown
        await asyncio.sleep(0.1)
    raise AssertionError(f"notifications tagged {tag!r}: wanted bodies {bodies}, saw {shown}")


async def test_push_shows_one_notification_per_tag(
    running_app: RunningApp, context: BrowserContext
) -> None:
    base = running_app.base_url
    await context.grant_permissions(["notifications"], origin=base)
    page = await _controlled_page(context, f"{base}/login")
    cdp = await context.new_cdp_session(page)
    reg_id = await _registration_id(cdp, f"{base}/")

    first = {
        "title": "삼성전자 72,000원 돌파",
        "body": "005930 72,000 이상",
        "url": "/symbol?code=005930",
        "tag": "rule-7",
    }
    await _push(cdp, base, reg_id, first)
    shown = await _notifications(page, "rule-7", [first["body"]])
    assert shown == [
        {
            "title": first["title"],
            "body": first["body"],
            "tag": "rule-7",
            "data": {"url": f"{base}/symbol?code=005930"},
            "icon": f"{base}/icon-192.png",
            "badge": f"{base}/badge-72.png",
        }
    ]

    # the same rule fires again: its notification is replaced, not duplicated
    await _push(cdp, base, reg_id, {**first, "body": "005930 72,500 이상"})
    shown = await _notifications(page, "rule-7", ["005930 72,500 이상"])
    assert shown[0]["title"] == first["title"]

    # a payload cannot point a click at another site: the URL falls back to the start page
    await _push(
        cdp,
        base,
        reg_id,
        {"title": "x", "body": "offsite", "url": "https://evil.example/", "tag": "t2"},
    )
    shown = await _notifications(page, "t2", ["offsite"])
    assert [n["data"] for n in shown] == [{"url": f"{base}/"}]
    assert len(await page.evaluate(NOTIFICATIONS, "rule-7")) == 1


async def test_app_shell_opens_offline(running_app: RunningApp, context: BrowserContext) -> None:
    base = running_app.base_url
    page = await _signed_in(context, base)
    # requests the worker must leave alone, made while it controls the page
    statuses = await page.evaluate(
        "Promise.all(['/api/push/vapid-public-key', '/ping']"
        ".map(u => fetch(u).then(r => r.status)))"
    )
    assert statuses[1] == 200
    entry = await page.get_attribute("link[rel=modulepreload][href*='entry.client']", "href")
    assert entry and entry.startswith("/assets/")

    cached = await page.evaluate(CACHED_URLS)
    assert all(re.fullmatch(r"tickwatch-(shell|runtime)-v\d+", name) for name in cached), cached
    urls = {u for found in cached.values() for u in found}
    assert {f"{base}/", f"{base}/manifest.json", f"{base}/icon-192.png", f"{base}{entry}"} <= urls
    never = [u for u in urls if re.search(r"/(api|auth|_event|ping)(/|$|\?)", u)]
    assert not never, never

    await context.set_offline(True)
    try:
        assert await page.evaluate("fetch('/ping').then(() => 'online', () => 'offline')") == (
            "offline"
        )
        worker = context.service_workers[0]
        assert await worker.evaluate("fetch('/ping').then(() => 'online', () => 'offline')") == (
            "offline"
        )
        await page.reload(wait_until="load")
        await expect(page.locator(BRAND)).to_have_text(APP_NAME_KO, timeout=15_000)
        await expect(page.locator("a[href='/rules']").first).to_be_visible()
        # the cached scripts ran too: the route modules loaded and pwa.js is back
        await _until(page, "window.__reactRouterRouteModules !== undefined", 30)
        assert await page.evaluate("typeof window.tickwatchPush") == "object"
        await shot(page, "pwa-offline", 1280)
        await page.set_viewport_size({"width": 390, "height": 844})
        await expect(page.locator(BRAND)).to_have_text(APP_NAME_KO)
        await shot(page, "pwa-offline", 390)
    finally:
        await context.set_offline(False)


async def test_install_button_follows_the_browsers_offer(
    running_app: RunningApp, context: BrowserContext
) -> None:
    base = running_app.base_url
    page = await _signed_in(context, base)
    button = page.locator("#install-app")
    await expect(button).to_be_attached()
    await expect(button).to_be_hidden()  # no offer yet: nothing to click

    assert await page.evaluate(FAKE_INSTALL_OFFER) is True  # the mini-infobar is suppressed
    await expect(button).to_be_visible()
    await expect(button).to_have_text("앱 설치")
    await shot(page, "pwa-install", 1280)
    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(button).to_be_visible()
    await shot(page, "pwa-install", 390)

    await button.click()
    assert await page.evaluate("window.__promptCalls") == 1
    await expect(button).to_be_hidden()  # an offer is good for one prompt

    # the offer survives client-side navigation (the navbar re-mounts)...
    await page.evaluate(FAKE_INSTALL_OFFER)
    await page.click("a[href='/rules']")
    await page.wait_for_url(f"{base}/rules", timeout=30_000)
    await expect(page.locator("#install-app")).to_be_visible(timeout=15_000)
    # ...and ends when the app is installed
    await page.evaluate("window.dispatchEvent(new Event('appinstalled'))")
    await expect(page.locator("#install-app")).to_be_hidden()
    await page.evaluate("document.getElementById('install-app').click()")
    assert await page.evaluate("window.__promptCalls") == 1


def _fake_subscription(base: str) -> dict:
    """A subscription the server accepts: a real P-256 point and a loopback endpoint."""
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {
        "endpoint": f"{base}/fake-push/{os.urandom(8).hex()}",
        "expirationTime": None,
        "keys": {"p256dh": b64(point), "auth": b64(os.urandom(16))},
    }


# Headless Chromium has no push service, so PushManager is replaced by a stub that
# returns ``sub``; everything after it (pwa.js, the route, the database) is real.
STUB_PUSH_MANAGER = """(sub) => {
  window.__pushCalls = [];
  let current = null;
  const make = () => ({
    endpoint: sub.endpoint,
    options: {applicationServerKey: null},
    toJSON: () => sub,
    unsubscribe: async () => {
      window.__pushCalls.push('unsubscribe');
      current = null;
      return true;
    },
  });
  PushManager.prototype.getSubscription = async function () { return current; };
  PushManager.prototype.subscribe = async function (opts) {
    window.__pushCalls.push(
      'subscribe:' + opts.userVisibleOnly + ':' + new Uint8Array(opts.applicationServerKey).length
    );
    current = make();
    return current;
  };
}"""


async def test_push_helper_stores_and_removes_the_subscription(
    running_app: RunningApp, context: BrowserContext
) -> None:
    base = running_app.base_url
    await context.grant_permissions(["notifications"], origin=base)
    page = await _signed_in(context, base)
    sub = _fake_subscription(base)
    await page.evaluate(STUB_PUSH_MANAGER, sub)
    vapid = base64.urlsafe_b64encode(b"\x04" + os.urandom(64)).rstrip(b"=").decode()

    with_label = await page.evaluate(
        "([key]) => window.tickwatchPush.subscribe(key, 'e2e phone')", [vapid]
    )
    assert isinstance(with_label["id"], int) and with_label["hint"]
    assert await page.evaluate("window.__pushCalls") == ["subscribe:true:65"]

    removed = await page.evaluate("window.tickwatchPush.unsubscribe()")
    assert removed == {"removed": True}
    assert await page.evaluate("window.__pushCalls") == ["subscribe:true:65", "unsubscribe"]
    # nothing left to remove, and no request is needed to know it
    assert await page.evaluate("window.tickwatchPush.unsubscribe()") == {"removed": False}
