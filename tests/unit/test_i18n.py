"""Both catalogs stay in step, and every key the UI uses exists in both."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from app.i18n import LANGUAGES, catalog, language_from_accept, normalize_language, translate

ROOT = Path(__file__).resolve().parents[2]


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_catalogs_have_same_keys_and_placeholders():
    ko, en = catalog("ko"), catalog("en")
    assert set(ko) == set(en), set(ko) ^ set(en)
    for key in ko:
        assert _placeholders(ko[key]) == _placeholders(en[key]), key
        assert ko[key].strip() and en[key].strip(), key


def test_korean_catalog_is_korean():
    hangul = re.compile(r"[\uac00-\ud7a3]")
    ko = catalog("ko")
    # Most UI text must actually be Korean, not a copy of the English.
    korean = [k for k, v in ko.items() if hangul.search(v)]
    assert len(korean) >= 0.8 * len(ko)


def _literal_keys_used_in_code() -> set[str]:
    """Every string passed as the first argument to t(...) or translate(...) / _t(...)."""
    keys: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args:
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", "")
                first = node.args[0]
                if name in {"t", "translate", "_t"} and isinstance(first, ast.Constant):
                    keys.add(first.value)
    return keys


def test_every_literal_key_in_code_exists():
    used = _literal_keys_used_in_code()
    assert len(used) > 20  # the scan found the UI's keys, so this test is not vacuous
    for lang in LANGUAGES:
        missing = used - set(catalog(lang))
        assert not missing, (lang, missing)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("en-US,en;q=0.9,ko;q=0.8", "en"),
        ("ko-KR,ko;q=0.9,en-US;q=0.8", "ko"),
        ("fr-FR,fr;q=0.9,en;q=0.5", "en"),
        ("de-DE", "ko"),
        ("", "ko"),
        ("en;q=0.1,ko;q=0.9", "ko"),
        ("en;q=abc", "ko"),
    ],
)
def test_accept_language(header, expected):
    assert language_from_accept(header) == expected


def test_normalize_and_translate():
    assert normalize_language("EN_us") == "en"
    assert normalize_language("xx") == "ko"
    assert translate("watchlist.added", "en", name="SK hynix") == "SK hynix added."
    assert "SK하이닉스" in translate("watchlist.added", "ko", name="SK하이닉스")
    with pytest.raises(KeyError):
        translate("no.such.key", "en")
