"""The symbol master, copied from the broker so search and foreign keys work offline."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

import app.models.common  # noqa: F401  (naming convention before any table)


class Symbol(SQLModel, table=True):
    __tablename__ = "symbols"

    code: str = Field(primary_key=True, max_length=12)
    name_ko: str = Field(max_length=100, index=True)
    name_en: str = Field(max_length=100, index=True)
    market: str = Field(max_length=16)
    active: bool = True
