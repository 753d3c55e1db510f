"""``python -m app.cli vapid-keys`` prints a pair the web-push notifier accepts."""

from __future__ import annotations

import base64

from app.cli import main
from notifiers.webpush import WebPushNotifier


def _raw(b64url: str) -> bytes:
    return base64.urlsafe_b64decode(b64url + "=" * (-len(b64url) % 4))


def test_vapid_keys_are_printed_and_usable(capsys):
    assert main(["vapid-keys"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert set(lines) == {"VAPID_PUBLIC_KEY", "VAPID_PRIVATE_KEY"}
    assert len(_raw(lines["VAPID_PUBLIC_KEY"])) == 65 and _raw(lines["VAPID_PUBLIC_KEY"])[0] == 4
    assert len(_raw(lines["VAPID_PRIVATE_KEY"])) == 32
    WebPushNotifier(lines["VAPID_PRIVATE_KEY"], "mailto:ops@example.com")  # loads the key
