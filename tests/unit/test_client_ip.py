"""Client IP behind proxies: forged X-Forwarded-For entries are never believed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.api.client_ip import client_ip

PROXY = SimpleNamespace(host="10.0.0.2")


@pytest.mark.parametrize(
    ("header", "hops", "expected"),
    [
        ("6.6.6.6", 0, "10.0.0.2"),  # no proxy configured: the header is anyone's to write
        ("", 1, "10.0.0.2"),  # configured, but this request did not come through it
        ("203.0.113.7", 1, "203.0.113.7"),  # nginx appended the client it saw
        ("6.6.6.6, 203.0.113.7", 1, "203.0.113.7"),  # a forged entry before it is ignored
        ("6.6.6.6, 203.0.113.7, 10.0.0.9", 2, "203.0.113.7"),  # two proxies
        ("203.0.113.7", 2, "10.0.0.2"),  # shorter than the chain: trust nothing in it
        (" , 203.0.113.7 ,", 1, "203.0.113.7"),
    ],
)
def test_client_ip(header: str, hops: int, expected: str) -> None:
    assert client_ip(header, PROXY, hops) == expected


def test_no_peer_and_no_proxy_gives_empty() -> None:
    assert client_ip("6.6.6.6", None, 0) == ""


def test_the_setting_is_read_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import get_settings

    monkeypatch.setenv("TRUSTED_PROXY_HOPS", "1")
    get_settings.cache_clear()
    try:
        assert client_ip("6.6.6.6, 203.0.113.7", PROXY) == "203.0.113.7"
    finally:
        monkeypatch.delenv("TRUSTED_PROXY_HOPS")
        get_settings.cache_clear()
    assert client_ip("6.6.6.6, 203.0.113.7", PROXY) == "10.0.0.2"
