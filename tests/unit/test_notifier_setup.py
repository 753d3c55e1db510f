"""The server's channels follow its settings; a broken FCM file turns FCM off, not the app."""

from __future__ import annotations

from app.config import Settings
from app.runtime.notifier_setup import build_notifiers
from notifiers.webpush import generate_vapid_keys


def test_only_configured_channels_are_built(tmp_path, caplog):
    assert sorted(build_notifiers(Settings(smtp_host=""))) == ["discord"]
    public, private = generate_vapid_keys()
    bad = tmp_path / "sa.json"
    bad.write_text("{not json")
    cfg = Settings(
        smtp_host="127.0.0.1",
        telegram_bot_token="123:abc",
        vapid_public_key=public,
        vapid_private_key=private,
        fcm_project_id="demo",
        fcm_service_account_file=str(bad),
    )
    built = build_notifiers(cfg)
    assert sorted(built) == ["discord", "email", "telegram", "webpush"]
    assert "FCM is off" in caplog.text and "{not json" not in caplog.text
    assert {name: n.channel for name, n in built.items()} == {
        "discord": "discord",
        "email": "email",
        "telegram": "telegram",
        "webpush": "webpush",
    }
