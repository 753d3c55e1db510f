"""Alert text, rendered in the reader's language from the event's stored payload."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.i18n import translate


@dataclass(frozen=True, slots=True)
class RenderedAlert:
    title: str
    body: str
    text: str
    subject: str
    html: str


def won(value: int) -> str:
    return f"{value:,}"


def symbol_name(payload: dict[str, Any], lang: str) -> str:
    return payload.get("name_en" if lang == "en" else "name_ko") or payload.get("symbol", "")


def render_alert(payload: dict[str, Any], lang: str, base_url: str = "") -> RenderedAlert:
    if payload.get("kind") == "condition":
        return _render_condition(payload, lang, base_url)
    name = symbol_name(payload, lang)
    condition = translate(f"op.{payload['op']}", lang)
    change = payload.get("change_pct")
    change_text = f"{change:+.2f}%" if isinstance(change, int | float) else "—"
    params = {
        "name": name,
        "symbol": payload["symbol"],
        "condition": condition,
        "level": won(payload["level"]),
        "price": won(payload["price"]),
        "change": change_text,
    }
    title = translate("alert.title", lang, **params)
    body = translate("alert.body", lang, **params)
    if payload.get("rule_name"):
        title = f"{payload['rule_name']} · {title}"
    footer = translate("alert.email_footer", lang, url=f"{base_url.rstrip('/')}/rules")
    text = f"{body}\n\n{footer}\n"
    html_body = (
        '<!doctype html><html><body style="font-family:sans-serif">'
        f"<h2>{html.escape(title)}</h2><p>{html.escape(body)}</p>"
        f'<p style="color:#666;font-size:12px">{html.escape(footer)}</p></body></html>'
    )
    subject = translate("alert.email_subject", lang, **params)
    return RenderedAlert(title=title, body=body, text=text, subject=subject, html=html_body)


def _render_condition(payload: dict[str, Any], lang: str, base_url: str) -> RenderedAlert:
    """The text was rendered at firing in the owner's language (``payload["text"]``)."""
    name = symbol_name(payload, lang)
    summary = payload.get(f"summary_{lang}") or payload.get("summary_ko", "")
    head = payload.get("rule_name") or f"{name} ({payload['symbol']})"
    title = f"{head} · {summary}"
    body = payload.get("text") or summary
    footer = translate("alert.email_footer", lang, url=f"{base_url.rstrip('/')}/rules")
    text = f"{body}\n\n{footer}\n"
    html_body = (
        '<!doctype html><html><body style="font-family:sans-serif">'
        f"<h2>{html.escape(title)}</h2><p>{html.escape(body)}</p>"
        f'<p style="color:#666;font-size:12px">{html.escape(footer)}</p></body></html>'
    )
    subject = translate("alert.email_subject_condition", lang, name=name, summary=summary)
    return RenderedAlert(title=title, body=body, text=text, subject=subject, html=html_body)


DIGEST_LINES = 15
"""Lines a digest lists before "and N more": fits Telegram's 4,096 characters and a
phone screen; the count in the title and the history link cover the rest."""


@dataclass(frozen=True, slots=True)
class DigestItem:
    rule_id: int
    payload: dict[str, Any]
    fired_at: datetime


def _digest_head(payload: dict[str, Any], lang: str) -> str:
    name = symbol_name(payload, lang)
    if payload.get("kind") == "condition":
        what = payload.get(f"summary_{lang}") or payload.get("summary_ko", "")
    else:
        op = translate(f"op.{payload['op']}", lang)
        what = f"{op} {won(payload['level'])}"
    head = f"{name} ({payload.get('symbol', '')}) · {what}"
    return f"{payload['rule_name']} · {head}" if payload.get("rule_name") else head


def render_digest(
    items: list[DigestItem],
    lang: str,
    base_url: str = "",
    digest_key: str = "",
    tz: str = "Asia/Seoul",
) -> RenderedAlert:
    """Many alerts as one message: one line per rule with how often it fired and the
    last price. Nothing is dropped without a word: the title counts every alert and
    the tail says how many rules were left off the list."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("Asia/Seoul")
    groups: dict[int, list[DigestItem]] = {}
    for item in sorted(items, key=lambda i: i.fired_at):
        groups.setdefault(item.rule_id, []).append(item)
    ordered = sorted(groups.values(), key=lambda g: (-len(g), -g[-1].fired_at.timestamp()))
    lines = []
    for group in ordered[:DIGEST_LINES]:
        last = group[-1]
        lines.append(
            translate(
                "digest.line",
                lang,
                head=_digest_head(last.payload, lang),
                count=len(group),
                price=won(int(last.payload.get("price", 0))),
                time=last.fired_at.astimezone(zone).strftime("%H:%M:%S"),
            )
        )
    rest = ordered[DIGEST_LINES:]
    if rest:
        lines.append(
            translate(
                "digest.more",
                lang,
                alerts=f"{sum(len(g) for g in rest):,}",
                rules=f"{len(rest):,}",
            )
        )
    count = f"{len(items):,}"
    title = translate("digest.title", lang, count=count)
    link = f"{base_url.rstrip('/')}/history" + (f"?digest={digest_key}" if digest_key else "")
    footer = translate("digest.footer", lang, url=link)
    body = "\n".join(lines)
    text = f"{body}\n\n{footer}\n"
    items_html = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    html_body = (
        '<!doctype html><html><body style="font-family:sans-serif">'
        f"<h2>{html.escape(title)}</h2><ul>{items_html}</ul>"
        f'<p style="color:#666;font-size:12px">{html.escape(footer)}</p></body></html>'
    )
    subject = translate("digest.subject", lang, count=count)
    return RenderedAlert(title=title, body=body, text=text, subject=subject, html=html_body)
