"""The import direction in ARCHITECTURE.md: engines is pure; brokers/notifiers never reach app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# I/O, clocks-by-network, persistence and the upper layers are all off limits to engines/.
ENGINE_FORBIDDEN = {
    "app",
    "brokers",
    "notifiers",
    "socket",
    "ssl",
    "http",
    "urllib",
    "httpx",
    "requests",
    "aiohttp",
    "websockets",
    "asyncio",
    "sqlite3",
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "psycopg",
    "redis",
    "reflex",
    "fastapi",
    "aiosmtplib",
    "smtplib",
    "subprocess",
    "os",
    "shutil",
    "pathlib",
    "io",
    "time",
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            roots.add("<dynamic>")
    return roots


def _py_files(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"{folder}/ has no Python files"
    return files


@pytest.mark.parametrize("path", _py_files("engines"), ids=lambda p: str(p.relative_to(ROOT)))
def test_engines_are_pure(path: Path):
    bad = imported_roots(path) & (ENGINE_FORBIDDEN | {"<dynamic>"})
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "path",
    _py_files("brokers") + _py_files("notifiers"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_adapters_do_not_import_app(path: Path):
    assert "app" not in imported_roots(path), path


def test_scanner_catches_a_forbidden_import(tmp_path: Path):
    """Guard the guard: a file that imports sqlalchemy and app must be flagged."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sqlalchemy\nfrom app.db import session\nimport engines.market\n")
    assert {"sqlalchemy", "app"} <= imported_roots(bad)
