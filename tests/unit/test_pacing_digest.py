"""Channel pacing and the digest message: bad settings are refused, waits are exact,
and a digest accounts for every alert it stands for."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from app.config import Settings
from app.runtime.messages import DIGEST_LINES, DigestItem, render_digest
from app.runtime.pacing import DEFAULT_INTERVALS, ChannelPacer, parse_intervals

T0 = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)  # 10:00 KST


@pytest.mark.parametrize(
    "text",
    ["telegram", "telegram=", "=1", "telegram=x", "telegram=-1", "telegram=nan", "email=3601"],
)
def test_a_malformed_interval_is_refused_with_its_entry_named(text):
    with pytest.raises(ValueError, match=re.escape(text.split(",")[0])):
        parse_intervals(text)
    with pytest.raises(ValueError, match="DELIVERY_INTERVALS"):
        Settings(delivery_intervals=text)


def test_intervals_override_only_what_they_name():
    out = parse_intervals(" telegram=2.5 , discord=0 ,")
    assert out["telegram"] == 2.5 and out["discord"] == 0.0
    assert out["email"] == DEFAULT_INTERVALS["email"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_pacer_waits_the_interval_after_a_send_and_honours_a_longer_hold():
    clock = Clock()
    pacer = ChannelPacer(parse_intervals("telegram=1"), clock)
    key, other = (1, "telegram:5"), (2, "telegram:5")
    assert pacer.wait(key) == 0.0
    pacer.sent(key)
    assert pacer.wait(key) == pytest.approx(1.0)
    assert pacer.wait(other) == 0.0  # per user and channel
    clock.now += 0.4
    assert pacer.wait(key) == pytest.approx(0.6)
    pacer.sent(key, hold=30.0)  # a 429's retry-after outlasts the interval
    assert pacer.wait(key) == pytest.approx(30.0)
    pacer.sent(key, hold=0.0)  # a later short hold never shortens it
    assert pacer.wait(key) == pytest.approx(30.0)
    clock.now += 30.0
    assert pacer.wait(key) == 0.0


def test_an_unknown_kind_is_paced_at_one_second_not_unlimited():
    pacer = ChannelPacer(parse_intervals(""), Clock())
    assert pacer.interval("carrier_pigeon:3") == 1.0
    assert pacer.interval("in_app") == 0.0


def _price(rule: int, price: int, minute: int, name: str = "") -> DigestItem:
    return DigestItem(
        rule,
        {
            "symbol": "005930",
            "name_ko": "삼성전자",
            "name_en": "Samsung Electronics",
            "rule_name": name,
            "op": "above",
            "level": 70_000,
            "price": price,
        },
        T0 + timedelta(minutes=minute),
    )


def test_a_digest_counts_every_alert_and_groups_them_by_rule():
    items = [_price(1, 70_000 + i, i) for i in range(5)] + [_price(2, 71_000, 7, "breakout")]
    ko = render_digest(items, "ko", "https://tw.example", "abc123")
    assert "알림 6건" in ko.title and "알림 6건" in ko.subject
    lines = ko.body.splitlines()
    assert len(lines) == 2
    assert "5회" in lines[0] and "70,004원" in lines[0] and "10:04:00" in lines[0]  # KST
    assert lines[1].startswith("breakout · 삼성전자 (005930)") and "1회" in lines[1]
    assert "https://tw.example/history?digest=abc123" in ko.text
    en = render_digest(items, "en", "https://tw.example", "abc123", tz="UTC")
    assert "6 alerts" in en.title and "01:04:00" in en.body and "Samsung Electronics" in en.body
    assert "<li>" in en.html and "&lt;" not in en.title


def test_a_digest_beyond_its_line_budget_says_how_much_it_left_off():
    items = [_price(rule, 70_100, rule % 50) for rule in range(1, 41)]
    items += [_price(1, 70_200, 55)] * 3
    out = render_digest(items, "en")
    lines = out.body.splitlines()
    assert len(lines) == DIGEST_LINES + 1
    listed = sum(int(re.search(r": (\d+)×", line).group(1)) for line in lines[:-1])
    more = re.search(r"and ([\d,]+) more alerts from (\d+) other rules", lines[-1])
    assert more is not None
    assert listed + int(more.group(1)) == len(items) == 43
    assert int(more.group(2)) == 40 - DIGEST_LINES
    assert "43 alerts" in out.title
    assert "4×" in lines[0]  # the busiest rule comes first


def test_a_digest_escapes_user_text_in_html():
    out = render_digest([_price(1, 70_000, 0, "<b>x</b>"), _price(2, 70_000, 1)], "en")
    assert "<b>x</b>" not in out.html and "&lt;b&gt;x&lt;/b&gt;" in out.html
