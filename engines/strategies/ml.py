"""The ML strategy: a gradient-boosting classifier retrained walk-forward.

At every closed bar the strategy computes a feature row (:mod:`.features`: returns
over several lags, RSI, MACD histogram, Bollinger %b and width, volume against its
average, ATR against the price). A bar's label is whether the close ``horizon`` bars
later is higher. That label is known only ``horizon`` bars later, so the training set
built at bar ``t`` holds only bars ``i`` with ``i + horizon <= t``: nothing the model
learns from reaches past the bar it is trained at. The first model is trained once
``MIN_TRAIN_SAMPLES`` labelled bars exist, the window then grows up to
``train_window`` bars and rolls; a new model is trained every ``retrain_every`` bars.

With a model, the strategy predicts the probability of a rise and keeps a stance:
flat, it buys when the probability exceeds ``buy_threshold``; long (by its own
signals or by a position the account reports), it sells when the probability drops
below ``sell_threshold``. Between the two thresholds it holds, which keeps a
probability hovering around one threshold from churning trades.

Two ways to run, one contract:

* ``inline_training = True`` (the class default; the backtester): the strategy trains
  synchronously inside ``on_candle`` when a retrain is due. Deterministic: the same
  candles give the same models (``random_state`` fixed, no early stopping) and the
  same signals.
* ``inline_training = False`` (live and paper; the app sets it on the instance): the
  strategy never trains itself. After each ``on_candle`` the app calls
  :meth:`MLStrategy.pending_job`; when it returns a :class:`TrainingJob`, the app runs
  :func:`train` in a process pool (off the event loop; the function and both
  dataclasses are module-level and picklable), stores the resulting
  :class:`TrainedModel` under its ``version``, and calls :meth:`MLStrategy.install`.
  A job is handed out once; if no model arrives within ``retrain_every`` bars (a
  crashed worker), the next call hands out a fresh job. Until a model is installed
  the strategy emits no trade signals. A stored model can be re-installed after a
  restart with :meth:`MLStrategy.install` as well.

Use a ``spawn`` or ``forkserver`` process pool: the estimator trains with OpenMP
threads, and a worker forked from a process whose OpenMP runtime is already running
can hang.

scikit-learn is imported only inside :func:`train` and :func:`load_model`: listing
the strategies must not cost a second of import time.
"""

from __future__ import annotations

import hashlib
import pickle
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from engines.market import Candle
from engines.strategies.base import Context, Signal, Strategy, StrategyParams
from engines.strategies.features import FEATURE_NAMES, FeatureBuilder

MIN_TRAIN_SAMPLES = 100
"""Labelled bars needed before the first model: fewer and the trees fit noise."""

LEARNING_RATE = 0.1
RANDOM_STATE = 0


class MLParams(StrategyParams):
    model_config = ConfigDict(allow_inf_nan=False)

    horizon: int = Field(5, ge=1, le=20)
    train_window: int = Field(500, ge=100, le=3000, json_schema_extra={"step": 100})
    retrain_every: int = Field(20, ge=5, le=250, json_schema_extra={"step": 5})
    buy_threshold: float = Field(0.6, ge=0.5, le=0.99, json_schema_extra={"step": 0.07})
    sell_threshold: float = Field(0.45, ge=0.01, le=0.5, json_schema_extra={"step": 0.07})
    trees: int = Field(100, ge=20, le=500, json_schema_extra={"step": 40})
    max_depth: int = Field(3, ge=2, le=8)
    fraction: float = Field(1.0, gt=0.0, le=1.0, json_schema_extra={"step": 0.05})

    @field_validator("sell_threshold")
    @classmethod
    def _sell_below_buy(cls, sell: float, info: ValidationInfo) -> float:
        buy = info.data.get("buy_threshold")
        if buy is not None and sell >= buy:
            raise PydanticCustomError(
                "threshold_range",
                "the sell threshold ({sell}) must be below the buy threshold ({buy})",
                {"buy": buy, "sell": sell},
            )
        return sell


@dataclass(frozen=True, eq=False)
class TrainingJob:
    """Everything :func:`train` needs, and nothing it could look ahead with.

    ``trained_through`` is the start of the bar at which the job was made; every
    sample's label was known by then. ``sample_times`` name the bar of each row.
    """

    symbol: str
    features: np.ndarray
    labels: np.ndarray
    sample_times: tuple[datetime, ...]
    trained_through: datetime
    horizon: int
    trees: int
    max_depth: int
    feature_names: tuple[str, ...] = FEATURE_NAMES


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A fitted estimator as stored bytes, named by the hash of those bytes.

    ``version`` is a content hash: training twice on the same data gives the same
    version, so the app stores a model once and a user can see which model traded.
    """

    version: str
    trained_through: datetime
    n_samples: int
    feature_names: tuple[str, ...]
    blob: bytes
    horizon: int
    metrics: Mapping[str, float] = field(default_factory=dict)


def train(job: TrainingJob) -> TrainedModel:
    """Fit the classifier on ``job``. Pure and picklable: run it in a process pool.

    Raises ``ValueError`` on a malformed job (shapes, non-finite features, a single
    class, which no classifier can learn from).
    """
    x = np.asarray(job.features, dtype=np.float64)
    y = np.asarray(job.labels, dtype=np.int8)
    if x.ndim != 2 or x.shape[1] != len(job.feature_names):
        raise ValueError(f"features must be n x {len(job.feature_names)}, got {x.shape}")
    if y.shape != (x.shape[0],) or len(job.sample_times) != x.shape[0]:
        raise ValueError("features, labels and sample_times must have one entry per sample")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError("labels must hold both classes (0 and 1)")
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    estimator = HistGradientBoostingClassifier(
        max_iter=job.trees,
        max_depth=job.max_depth,
        learning_rate=LEARNING_RATE,
        early_stopping=False,
        random_state=RANDOM_STATE,
    )
    # One OpenMP thread: histogram sums are added in a thread-count-dependent order, so
    # a model fitted with 2 threads in a pool worker and with 1 in a busy process could
    # differ in its splits. One thread makes the same data give the same model (and
    # version) everywhere: backtest, paper and live agree. The pool gives parallelism.
    with threadpool_limits(limits=1, user_api="openmp"):
        estimator.fit(x, y)
    blob = pickle.dumps(estimator, protocol=5)
    accuracy = float((estimator.predict(x) == y).mean())
    return TrainedModel(
        version=hashlib.sha256(blob).hexdigest()[:16],
        trained_through=job.trained_through,
        n_samples=int(x.shape[0]),
        feature_names=tuple(job.feature_names),
        blob=blob,
        horizon=job.horizon,
        metrics={"in_sample_accuracy": accuracy, "up_rate": float(y.mean())},
    )


def load_model(blob: bytes) -> Any:
    """The estimator stored in ``blob``.

    Unpickling runs code: only pass blobs :func:`train` produced and the app stored.
    Users never supply models.
    """
    estimator = pickle.loads(blob)
    classes = getattr(estimator, "classes_", None)
    if not hasattr(estimator, "predict_proba") or classes is None or 1 not in list(classes):
        raise ValueError("the blob does not hold a fitted up/down classifier")
    return estimator


class MLStrategy(Strategy):
    """Walk-forward gradient boosting; see the module docstring for the training contract."""

    name = "ml"
    Params = MLParams
    title_key = "strategy.ml.title"
    description_key = "strategy.ml.description"
    history_size = 32  # features keep their own buffers; the context needs little
    extra_warmup = FeatureBuilder().warmup  # no host-side indicators: the features' warm-up
    params: MLParams

    inline_training: bool = True

    def __init__(self, params: StrategyParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.model: TrainedModel | None = None
        self.trainings = 0
        """Models installed so far (trained inline or handed in by the app)."""
        self.last_probability: float | None = None
        """Predicted probability of a rise at the last bar (``None`` without a model)."""
        self._estimator: Any = None
        self._up_col = 1
        self._symbol = ""
        self._reset_buffers()

    def _reset_buffers(self) -> None:
        keep = self.params.train_window + self.params.horizon
        self._builder = FeatureBuilder()
        self._times: deque[datetime] = deque(maxlen=keep)
        self._rows: deque[tuple[float, ...] | None] = deque(maxlen=keep)
        self._closes: deque[float] = deque(maxlen=keep)
        self._bar = -1
        self._next_due = 0
        self._outstanding: tuple[int, TrainingJob] | None = None
        self._long = False

    def setup(self, ctx: Context) -> None:
        self._symbol = ctx.symbol
        self._reset_buffers()

    # ---- training ---------------------------------------------------------------

    def _labelled(self) -> list[int]:
        """Buffer positions whose label is complete now, newest ``train_window`` of them."""
        last = len(self._closes) - 1 - self.params.horizon
        rows = self._rows
        picked = [j for j in range(last + 1) if rows[j] is not None]
        return picked[-self.params.train_window :]

    def _due_job(self) -> TrainingJob | None:
        if self._bar < self._next_due:
            return None
        picked = self._labelled()
        if len(picked) < MIN_TRAIN_SAMPLES:
            return None
        h = self.params.horizon
        closes = self._closes
        labels = np.fromiter(
            (1 if closes[j + h] > closes[j] else 0 for j in picked),
            dtype=np.int8,
            count=len(picked),
        )
        if labels.min() == labels.max():
            # A window that only rose (or only fell) teaches nothing; try again later.
            self._next_due = self._bar + self.params.retrain_every
            return None
        rows = self._rows
        return TrainingJob(
            symbol=self._symbol,
            features=np.array([rows[j] for j in picked], dtype=np.float64),
            labels=labels,
            sample_times=tuple(self._times[j] for j in picked),
            trained_through=self._times[-1],
            horizon=h,
            trees=self.params.trees,
            max_depth=self.params.max_depth,
        )

    def pending_job(self) -> TrainingJob | None:
        """A retrain for the app to run, when one is due (live and paper mode).

        Returns each job once; see the module docstring for the retry rule.
        """
        if self.inline_training:
            return None
        if self._outstanding is not None:
            made, _ = self._outstanding
            if self._bar - made < self.params.retrain_every:
                return None
            self._outstanding = None  # lost: hand out a fresh job
        job = self._due_job()
        if job is not None:
            self._outstanding = (self._bar, job)
        return job

    def install(self, model: TrainedModel) -> None:
        """Start predicting with ``model``; ``ValueError`` if it was made for other features
        or another horizon (it would answer a different question)."""
        if tuple(model.feature_names) != FEATURE_NAMES:
            raise ValueError("the model was trained on other features than this strategy builds")
        if model.horizon != self.params.horizon:
            raise ValueError(
                f"the model predicts {model.horizon} bars ahead, the strategy {self.params.horizon}"
            )
        estimator = load_model(model.blob)
        made = self._bar
        if self._outstanding is not None:
            made = self._outstanding[0]
            self._outstanding = None
        self._estimator = estimator
        self._up_col = list(estimator.classes_).index(1)
        self.model = model
        self.trainings += 1
        self._next_due = max(made, 0) + self.params.retrain_every

    # ---- bars -------------------------------------------------------------------

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        row = self._builder.update(candle)
        self._bar += 1
        self._times.append(candle.start)
        self._rows.append(row)
        self._closes.append(float(candle.close))
        if self.inline_training:
            job = self._due_job()
            if job is not None:
                self.install(train(job))
        if self._estimator is None or row is None:
            self.last_probability = None
            return None
        p = float(self._estimator.predict_proba(np.array([row]))[0, self._up_col])
        self.last_probability = p
        params = self.params
        holding = self._long or ctx.position > 0
        why = (("probability", round(p * 100)), ("horizon", params.horizon))
        if not holding and p > params.buy_threshold:
            self._long = True
            return ctx.buy(fraction=params.fraction, reason="strategy.ml.buy", reason_params=why)
        if holding and p < params.sell_threshold:
            self._long = False
            return ctx.sell(reason="strategy.ml.sell", reason_params=why)
        return None
