"""``t("key")``: a UI string as a Var that follows the page's language."""

from __future__ import annotations

import reflex as rx

from app.i18n import LANGUAGES, catalog
from app.states.session import SessionState


def t(key: str) -> rx.Var:
    # A typo'd key fails at compile time, not as a blank label in production.
    for lang in LANGUAGES:
        if key not in catalog(lang):
            raise KeyError(f"i18n key {key!r} missing in {lang}.json")
    return SessionState.tr[key].to(str)
