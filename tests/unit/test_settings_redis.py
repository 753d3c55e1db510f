"""REDIS_URL: one Redis for Reflex's state and our live bus, unless told otherwise."""

from __future__ import annotations

import pytest


def test_redis_url_falls_back_to_reflexs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers sharing Reflex's Redis must share the live bus too, or pages on the
    workers without the runner never see a price."""
    from app.config import Settings

    monkeypatch.setenv("REFLEX_REDIS_URL", "redis://r:6379/0")
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert Settings().redis_url == "redis://r:6379/0"
    monkeypatch.setenv("REDIS_URL", "redis://other:6379/1")
    assert Settings().redis_url == "redis://other:6379/1"
    monkeypatch.delenv("REFLEX_REDIS_URL")
    monkeypatch.delenv("REDIS_URL")
    assert Settings().redis_url == ""
