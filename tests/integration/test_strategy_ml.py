"""ML strategies in the runner: training in a process pool, the loop stays responsive,
models are versioned, stored and installed again after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import numpy as np
import pytest

from app import db
from app.runtime.ml_training import MlTrainer
from app.runtime.strategy_desk import StrategyDesk
from app.services import candles as candle_store
from app.services import ml_models
from app.services.errors import NotFound
from engines.strategies import ml
from tests.integration import helpers
from tests.integration.helpers import make_user
from tests.integration.test_strategy_kit import SAMSUNG, candles, paper_market, seed

pytestmark = pytest.mark.usefixtures("database")

TRAIN_AT_LEAST_S = 0.6
PARAMS = {"horizon": 1, "train_window": 100, "retrain_every": 20, "trees": 20, "max_depth": 2}


def train_in_worker(job: ml.TrainingJob) -> ml.TrainedModel:
    """The real ``ml.train``, plus the worker's pid and a floor on the time it takes, so a
    training that ran on the event loop would show as a stalled heartbeat."""
    started = time.perf_counter()
    model = ml.train(job)
    while time.perf_counter() - started < TRAIN_AT_LEAST_S:
        pass  # busy: CPU work, as a bigger model would be
    metrics = {**model.metrics, "pid": float(os.getpid())}
    return dataclasses.replace(model, metrics=metrics)


def _series(n: int = 300) -> list:
    rng = np.random.default_rng(7)
    steps = rng.choice([-300, -200, -100, 100, 200, 300], size=n)
    closes = (70_000 + np.cumsum(steps)).astype(int).tolist()
    return candles(SAMSUNG, closes)


async def _heartbeat(beats: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        beats.append(loop.time())
        await asyncio.sleep(0.01)


async def test_training_runs_in_another_process_and_the_model_survives_a_restart(
    report_figures,
):
    att = await seed("ml@example.com", mode="alert", strategy="ml", params=PARAMS, label="ml")
    async with db.session() as s:
        await candle_store.store(s, _series())

    trainer = MlTrainer(max_workers=2, train_fn=train_in_worker)
    desk = StrategyDesk(helpers.settings(), paper_market(), trainer=trainer)
    beats: list[float] = []
    stop = asyncio.Event()
    beat = asyncio.create_task(_heartbeat(beats, stop))
    started = asyncio.get_running_loop().time()
    try:
        await desk.sync()  # warm-up: the strategy asks for its first model
        await desk.drain()
    finally:
        stop.set()
        await beat
        await trainer.close()
    took = asyncio.get_running_loop().time() - started
    strategy = desk.slots[att.attachment_id].strategy
    assert trainer.jobs == 1 and strategy.model is not None
    worker_pid = int(strategy.model.metrics["pid"])
    assert worker_pid != os.getpid()
    lag = max(b - a for a, b in zip(beats, beats[1:], strict=False)) - 0.01
    assert took >= TRAIN_AT_LEAST_S and lag < 0.25, (took, lag)

    async with db.session() as s:
        stored = await ml_models.latest(s, att.config_id, SAMSUNG)
        versions = await ml_models.list_versions(s, att.user_id, att.config_id)
    assert stored is not None and stored.version == strategy.model.version
    assert stored.blob == strategy.model.blob and stored.horizon == 1
    assert [v.version for v in versions] == [stored.version] and versions[0].active
    assert versions[0].n_samples == strategy.model.n_samples == 100

    # a restart: the stored version is installed before any new training finishes
    again = MlTrainer(max_workers=1, train_fn=train_in_worker)
    desk2 = StrategyDesk(helpers.settings(), paper_market(), trainer=again)
    try:
        await desk2.sync()
        reloaded = desk2.slots[att.attachment_id].strategy
        assert reloaded.model is not None and reloaded.model.version == stored.version
        assert reloaded.last_probability is not None  # it predicted during warm-up
        await desk2.drain()
    finally:
        await again.close()
    report_figures(
        worker_pid=worker_pid,
        runner_pid=os.getpid(),
        training_wall_s=round(took, 2),
        max_heartbeat_lag_s=round(lag, 3),
        version=stored.version,
    )


async def test_model_versions_belong_to_the_configs_owner():
    att = await seed("owner@example.com", mode="alert", strategy="ml", params=PARAMS)
    other = (await make_user("other@example.com")).id
    async with db.session() as s:
        with pytest.raises(NotFound):
            await ml_models.list_versions(s, other, att.config_id)
        assert await ml_models.list_versions(s, att.user_id, att.config_id) == []
