"""Trained ML models, versioned by content and stored per (config, symbol).

The runner stores every model an ML strategy trains (``save``) and marks it the
active one, so a restart installs the model the strategy last traded with
(``latest``) instead of trading blind until the next retrain. A version is the
hash of the model's bytes: the same training data gives the same version, which is
stored once. Older inactive versions beyond ``KEEP_VERSIONS`` are deleted, so the
table does not grow with every retrain.

Reads for pages go through :func:`list_versions`, which checks ownership like every
other service; the runner's own calls act for the config's owner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.strategies import StrategyConfig, StrategyModel
from app.services import audit
from app.services.errors import NotFound

__all__ = ["KEEP_VERSIONS", "ModelVersion", "activate", "latest", "list_versions", "save"]

log = logging.getLogger(__name__)

KEEP_VERSIONS = 10


class TrainedLike(Protocol):
    """What ``engines.strategies.ml.TrainedModel`` carries (kept structural here)."""

    version: str
    trained_through: datetime
    n_samples: int
    feature_names: tuple[str, ...]
    blob: bytes
    horizon: int
    metrics: Any


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A stored model without its bytes: what a page lists."""

    id: int
    config_id: int
    symbol: str
    version: str
    trained_through: datetime
    n_samples: int
    horizon: int
    metrics: dict[str, Any]
    active: bool
    created_at: datetime


def _view(row: StrategyModel) -> ModelVersion:
    return ModelVersion(
        id=row.id or 0,
        config_id=row.config_id,
        symbol=row.symbol,
        version=row.version,
        trained_through=row.trained_through,
        n_samples=row.n_samples,
        horizon=row.horizon,
        metrics=dict(row.metrics),
        active=row.active,
        created_at=row.created_at,
    )


def _json_metrics(metrics: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dict(metrics or {}).items():
        out[str(key)] = float(value) if isinstance(value, int | float) else str(value)
    return out


async def save(
    session: AsyncSession, config_id: int, symbol: str, model: TrainedLike
) -> StrategyModel:
    """Store ``model`` (once per version) and make it the active one of (config, symbol)."""
    config = await session.get(StrategyConfig, config_id)
    if config is None:
        raise NotFound()
    where = (StrategyModel.config_id == config_id, StrategyModel.symbol == symbol)
    row = (
        await session.exec(
            select(StrategyModel).where(*where, StrategyModel.version == model.version)
        )
    ).first()
    if row is None:
        row = StrategyModel(
            user_id=config.user_id,
            config_id=config_id,
            symbol=symbol,
            version=model.version,
            trained_through=model.trained_through,
            n_samples=int(model.n_samples),
            horizon=int(model.horizon),
            feature_names=list(model.feature_names),
            metrics=_json_metrics(model.metrics),
            blob=bytes(model.blob),
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:  # the same version stored by another runner meanwhile
            await session.rollback()
            row = (
                await session.exec(
                    select(StrategyModel).where(*where, StrategyModel.version == model.version)
                )
            ).one()
    await session.exec(update(StrategyModel).where(*where).values(active=False))
    await session.exec(
        update(StrategyModel).where(col(StrategyModel.id) == row.id).values(active=True)
    )
    stale = (
        await session.exec(
            select(StrategyModel.id)
            .where(*where, col(StrategyModel.id) != row.id)
            .order_by(col(StrategyModel.created_at).desc(), col(StrategyModel.id).desc())
            .offset(KEEP_VERSIONS - 1)
        )
    ).all()
    if stale:
        await session.exec(delete(StrategyModel).where(col(StrategyModel.id).in_(stale)))
    await session.commit()
    await session.refresh(row)
    log.info("model %s stored for config %s on %s", row.version, config_id, symbol)
    return row


async def latest(session: AsyncSession, config_id: int, symbol: str) -> StrategyModel | None:
    """The active model of (config, symbol), bytes included; None before the first training."""
    return (
        await session.exec(
            select(StrategyModel)
            .where(
                StrategyModel.config_id == config_id,
                StrategyModel.symbol == symbol,
                col(StrategyModel.active).is_(True),
            )
            .order_by(col(StrategyModel.id).desc())
        )
    ).first()


async def list_versions(
    session: AsyncSession,
    user_id: int,
    config_id: int,
    symbol: str | None = None,
    ip: str = "",
) -> list[ModelVersion]:
    """The user's stored versions of a config, newest first. Another user's: NotFound."""
    config = await session.get(StrategyConfig, config_id)
    if config is None or config.user_id != user_id:
        await audit.denied(user_id, "strategy_config", config_id, ip)
        raise NotFound()
    stmt = select(StrategyModel).where(StrategyModel.config_id == config_id)
    if symbol:
        stmt = stmt.where(StrategyModel.symbol == symbol)
    rows = (
        await session.exec(
            stmt.order_by(col(StrategyModel.created_at).desc(), col(StrategyModel.id).desc())
        )
    ).all()
    return [_view(r) for r in rows]


async def activate(
    session: AsyncSession, user_id: int, model_id: int, ip: str = ""
) -> ModelVersion:
    """Make a stored version the active one again (a rollback after a worse retrain)."""
    row = await session.get(StrategyModel, model_id)
    if row is None or row.user_id != user_id:
        await audit.denied(user_id, "strategy_model", model_id, ip)
        raise NotFound()
    await session.exec(
        update(StrategyModel)
        .where(StrategyModel.config_id == row.config_id, StrategyModel.symbol == row.symbol)
        .values(active=False)
    )
    row.active = True
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return _view(row)
