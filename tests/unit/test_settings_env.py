"""Settings from the environment: REDIS_URL falls back to Reflex's; LOG_JSON has auto."""

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


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("on", True), ("false", False), ("no", False)],
)
def test_log_json_explicit(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    from app.config import Settings

    monkeypatch.setenv("LOG_JSON", value)
    assert Settings().json_logs is expected


def test_log_json_auto_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production (a container, a service manager) has no terminal on stderr: JSON."""
    import sys

    from app.config import Settings

    monkeypatch.delenv("LOG_JSON", raising=False)
    settings = Settings()
    assert settings.log_json == "auto"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert settings.json_logs is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert settings.json_logs is False


def test_log_json_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from app.config import Settings

    monkeypatch.setenv("LOG_JSON", "sometimes")
    with pytest.raises(ValidationError, match="log_json"):
        Settings()
