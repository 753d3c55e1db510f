"""Trains ML strategies' models in a process pool, never on the event loop.

Fitting a gradient-boosting model takes seconds of CPU; on the event loop it would
freeze every tick, alert and page of the runner meanwhile. So the runner hands the
strategy's :class:`~engines.strategies.ml.TrainingJob` to :func:`train` in a
``ProcessPoolExecutor`` through ``loop.run_in_executor`` and awaits the result.

The pool uses ``spawn``: the estimator trains with OpenMP threads, and a worker
forked from a process that already runs threads (the runner does: database
drivers, HTTP clients) can hang. Workers start lazily, on the first job.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

TrainFn = Callable[[Any], Any]


def _default_train() -> TrainFn:
    from engines.strategies.ml import train

    return train


class MlTrainer:
    """A small pool of training processes (``max_workers`` = 2 on the 2-core target)."""

    def __init__(self, max_workers: int = 2, train_fn: TrainFn | None = None) -> None:
        self.max_workers = max_workers
        self.train_fn = train_fn or _default_train()
        self._pool: ProcessPoolExecutor | None = None
        self.jobs = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.max_workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    async def train(self, job: object) -> Any:
        """The trained model. Raises what training raised (``ValueError`` for a bad job)."""
        loop = asyncio.get_running_loop()
        self.jobs += 1
        return await loop.run_in_executor(self._executor(), self.train_fn, job)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # Off the loop: shutdown waits for running jobs to finish.
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
