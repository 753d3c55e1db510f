"""UI text in Korean and English.

Catalogs are flat JSON files (``ko.json``, ``en.json``) so translators can edit
them without touching code. A test keeps both catalogs in step: same keys, same
``{placeholders}``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

LANGUAGES: tuple[str, ...] = ("ko", "en")
DEFAULT_LANGUAGE = "ko"
_DIR = Path(__file__).resolve().parent


@cache
def catalog(lang: str) -> dict[str, str]:
    """``{lang}.json`` plus every ``{lang}.<feature>.json``; a key defined twice is a bug."""
    merged: dict[str, str] = {}
    for path in [_DIR / f"{lang}.json", *sorted(_DIR.glob(f"{lang}.*.json"))]:
        with path.open(encoding="utf-8") as fh:
            part = json.load(fh)
        clash = set(part) & set(merged)
        if clash:
            raise ValueError(f"{path.name} redefines {sorted(clash)}")
        merged.update(part)
    return merged


def normalize_language(value: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """Map 'en-US', 'ko_KR', 'EN' and the like onto a supported language."""
    if not value:
        return default
    head = value.strip().lower().replace("_", "-").split("-")[0]
    return head if head in LANGUAGES else default


def language_from_accept(header: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """First supported language in an Accept-Language header, honouring q-values."""
    if not header:
        return default
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        pieces = part.strip().split(";")
        tag = pieces[0].strip()
        quality = 1.0
        for param in pieces[1:]:
            name, _, val = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(val)
                except ValueError:
                    quality = 0.0
        lang = normalize_language(tag, default="")
        if lang and quality > 0:
            ranked.append((-quality, index, lang))
    return sorted(ranked)[0][2] if ranked else default


def translate(key: str, lang: str, **params: object) -> str:
    """Text for ``key``. A missing key is a bug, so it raises instead of guessing."""
    text = catalog(normalize_language(lang))[key]
    return text.format(**params) if params else text
