"""Alert text, rendered in the reader's language from the event's stored payload."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

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
