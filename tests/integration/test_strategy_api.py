"""The strategies REST API over ASGI: auth, bad params in Korean and English, CRUD, kill."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from app import db
from app.api import strategies as strategies_api
from app.i18n import translate
from app.services import auth
from tests.integration.helpers import make_user, seed_symbols

pytestmark = pytest.mark.usefixtures("database")
HANGUL = re.compile(r"[\uac00-\ud7a3]")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    api = FastAPI()
    api.include_router(strategies_api.router)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def _sign_in(client: httpx.AsyncClient, email: str = "api@example.com") -> int:
    await seed_symbols()
    user = await make_user(email)
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1), "agent", "1.2.3.4")
    client.cookies.set(auth.SESSION_COOKIE, token)
    return user.id


GOOD = {"label": "golden", "strategy": "ma_cross", "params": {"fast": 5, "slow": 20}}


async def test_signed_out_and_cross_site_requests_are_refused(client):
    response = await client.get("/api/strategies")
    assert response.status_code == 401
    assert response.json()["message"] == translate("error.not_signed_in", "ko")
    await _sign_in(client)
    response = await client.post(
        "/api/strategies", json=GOOD, headers={"origin": "https://evil.example"}
    )
    assert response.status_code == 403 and response.json()["error"] == "cross_origin"
    assert (await client.get("/api/strategies")).json() == {"strategies": []}


@pytest.mark.parametrize("lang", ["en", "ko"])
async def test_bad_params_get_422_with_the_field_and_a_translated_message(client, lang):
    await _sign_in(client)
    body = {**GOOD, "params": {"fast": 50, "slow": 20}}
    response = await client.post("/api/strategies", json=body, headers={"accept-language": lang})
    assert response.status_code == 422
    errors = response.json()["errors"]
    [(field, error)] = errors.items()
    assert field in ("fast", "slow") and error["code"] == "strategy_fast_not_shorter"
    message = error["message"]
    assert "50" in message and "20" in message
    assert bool(HANGUL.search(message)) is (lang == "ko")
    assert message == translate("error.strategy_fast_not_shorter", lang, fast=50, slow=20)
    # the same through the check-only route, and nothing was saved
    check = await client.post(
        "/api/strategies/validate", json=body, headers={"accept-language": lang}
    )
    assert check.status_code == 200
    assert check.json() == {"valid": False, "errors": errors}
    assert (await client.get("/api/strategies")).json() == {"strategies": []}


async def test_threshold_out_of_range_is_named_too(client):
    await _sign_in(client)
    body = {"label": "ml", "strategy": "ml", "params": {"buy_threshold": 1.5}}
    response = await client.post("/api/strategies", json=body, headers={"accept-language": "en"})
    assert response.status_code == 422
    error = response.json()["errors"]["buy_threshold"]
    assert error["code"] == "strategy_too_high" and "0.99" in error["message"]


async def test_create_list_update_attach_kill_delete(client):
    await _sign_in(client)
    created = await client.post("/api/strategies", json={**GOOD, "timeframe": "1d"})
    assert created.status_code == 201, created.text
    config = created.json()
    assert (config["label"], config["params"]["slow"], config["attachments"]) == (
        "golden",
        20,
        [],
    )
    cid = config["id"]

    patched = await client.patch(f"/api/strategies/{cid}", json={"label": "renamed"})
    assert patched.status_code == 200 and patched.json()["label"] == "renamed"
    assert patched.json()["params"] == config["params"]  # left out: kept
    bad = await client.patch(f"/api/strategies/{cid}", json={"timeframe": "2h"})
    assert bad.status_code == 422 and "timeframe" in bad.json()["errors"]

    live = await client.post(
        f"/api/strategies/{cid}/attachments", json={"symbol": "005930", "mode": "live"}
    )
    assert live.status_code == 422
    assert live.json()["errors"]["mode"]["code"] == "strategy_live_needs_confirmation"
    attached = await client.post(
        f"/api/strategies/{cid}/attachments", json={"symbol": "삼성전자", "mode": "paper"}
    )
    assert attached.status_code == 201
    att = attached.json()
    assert (att["symbol"], att["mode"], att["killed"]) == ("005930", "paper", False)

    killed = await client.post(f"/api/strategies/attachments/{att['id']}/kill")
    assert killed.status_code == 200 and killed.json()["killed"] is True
    listed = (await client.get("/api/strategies")).json()["strategies"]
    assert [a["killed"] for a in listed[0]["attachments"]] == [True]

    assert (await client.delete(f"/api/strategies/{cid}")).status_code == 204
    assert (await client.get("/api/strategies")).json() == {"strategies": []}
    assert (await client.delete(f"/api/strategies/{cid}")).status_code == 404


async def test_catalogue_and_malformed_bodies(client):
    await _sign_in(client)
    catalogue = await client.get("/api/strategies/catalogue", headers={"accept-language": "ko"})
    assert catalogue.status_code == 200
    by_name = {s["name"]: s for s in catalogue.json()["strategies"]}
    assert {"ma_cross", "rsi_reversion", "macd_cross", "bollinger", "combined", "ml"} <= set(
        by_name
    )
    ma = by_name["ma_cross"]
    assert ma["title"] == translate("strategy.ma_cross.title", "ko")
    fast = next(f for f in ma["fields"] if f["name"] == "fast")
    assert fast["kind"] == "int" and fast["low"] is not None and fast["high"] is not None
    too_big = await client.post("/api/strategies", content=b"{" + b" " * 20_000 + b"}")
    assert too_big.status_code == 413
    assert (await client.post("/api/strategies", content=b"[1, 2")).status_code == 400
    assert (await client.post("/api/strategies", json=[1])).status_code == 400
    assert (await client.get("/api/strategies")).json() == {"strategies": []}
