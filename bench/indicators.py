"""Streaming indicators: accuracy against ``ta``, throughput, and the gain over recomputing.

Three questions, on one seeded random walk of 5,000 bars (40 bars a session):

* accuracy: every registered indicator (default parameters, window 20 where there is
  no default) is streamed bar by bar and compared with ``ta`` 0.11 after warm-up;
  ``max_abs_err_vs_ta`` and ``max_rel_err_vs_ta`` (relative to ``max(1, |value|)``) are
  the worst over all indicators and output fields;
* throughput: ``updates_per_s`` is indicator updates per second when all of them are
  fed every bar (median of three runs), ``ns_per_update`` the same per indicator;
* the point of streaming: a runner without it would recompute ``ta`` over a trailing
  window at every bar close. ``speedup_vs_ta_recompute`` is the time of one ``ta``
  computation over 500 bars divided by one streaming update, per indicator, and
  ``overall`` for all of them together (sum of ``ta`` times / sum of update times).
"""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import ta

from engines.indicators import INDICATOR_NAMES as ALL_NAMES
from engines.indicators import Indicator, make_indicator

log = logging.getLogger("bench.indicators")

SEED = 20240603
N_BARS = 5_000
SESSION_BARS = 40
RECOMPUTE_BARS = 500
RUNS = 3
TA_REPEATS = 5

NO_TA = ("pivot_high", "pivot_low")
"""``ta`` has no pivot points; their tests compare with a brute-force reference."""
INDICATOR_NAMES = tuple(name for name in ALL_NAMES if name not in NO_TA)

PARAMS: dict[str, dict[str, Any]] = {
    name: {"window": 20} if name in ("sma", "ema", "wma", "highest", "lowest", "volume_sma") else {}
    for name in INDICATOR_NAMES
}


def _bars() -> pd.DataFrame:
    """A random walk near 70,000 won with OHLCV around it."""
    rng = np.random.default_rng(SEED)
    close = 70_000 * np.exp(np.cumsum(rng.normal(0, 0.01, N_BARS)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, N_BARS)) + 0.001)
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, N_BARS)) - 0.001)
    return pd.DataFrame(
        {
            "close": close,
            "high": high,
            "low": low,
            "volume": rng.integers(1, 2_000_000, N_BARS).astype(float),
            "session": np.arange(N_BARS) // SESSION_BARS,
        }
    )


def _vwap(df: pd.DataFrame) -> pd.Series:
    """Session-anchored VWAP from ta: its rolling VWAP over each session's bars, with
    a window as long as the session and ``fillna=True`` (min_periods=0)."""
    parts = []
    for _, s in df.groupby("session", sort=True):
        parts.append(
            ta.volume.VolumeWeightedAveragePrice(
                s["high"], s["low"], s["close"], s["volume"], len(s), fillna=True
            ).volume_weighted_average_price()
        )
    return pd.concat(parts)


def _ta(name: str, ind: Indicator[Any], df: pd.DataFrame) -> list[pd.Series]:
    """``ta``'s outputs for ``ind``, one series per field of our value."""
    c, h, lo, v = df["close"], df["high"], df["low"], df["volume"]
    p = ind.params
    window = getattr(ind, "window", None)
    if name in ("sma", "volume_sma"):
        return [ta.trend.SMAIndicator(v if name == "volume_sma" else c, window).sma_indicator()]
    if name == "ema":
        return [ta.trend.EMAIndicator(c, window).ema_indicator()]
    if name == "wma":
        return [ta.trend.WMAIndicator(c, window).wma()]
    if name == "rsi":
        return [ta.momentum.RSIIndicator(c, window).rsi()]
    if name == "macd":
        m = ta.trend.MACD(c, p["slow"], p["fast"], p["signal"])
        return [m.macd(), m.macd_signal(), m.macd_diff()]
    if name == "bollinger":
        b = ta.volatility.BollingerBands(c, window, p["num_std"])
        return [b.bollinger_mavg(), b.bollinger_hband(), b.bollinger_lband()]
    if name == "atr":
        return [ta.volatility.AverageTrueRange(h, lo, c, window).average_true_range()]
    if name == "stoch":
        s = ta.momentum.StochasticOscillator(h, lo, c, window, p["smooth"])
        return [s.stoch(), s.stoch_signal()]
    if name == "vwap":
        return [_vwap(df)]
    if name == "obv":
        return [ta.volume.OnBalanceVolumeIndicator(c, v).on_balance_volume()]
    if name in ("highest", "high_52w"):
        return [ta.volatility.DonchianChannel(h, lo, c, window).donchian_channel_hband()]
    if name in ("lowest", "low_52w"):
        return [ta.volatility.DonchianChannel(h, lo, c, window).donchian_channel_lband()]
    raise ValueError(f"no ta reference for {name!r}")


def _fields(value: Any) -> tuple[float, ...]:
    slots = getattr(type(value), "__slots__", None)
    return tuple(getattr(value, f) for f in slots) if slots else (value,)


def _rows(ind: Indicator[Any], df: pd.DataFrame) -> list[tuple[Any, ...]]:
    return list(zip(*(df[field].tolist() for field in ind.inputs), strict=True))


def _errors(df: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Per indicator: (max abs error, max relative error) against ta after warm-up."""
    out: dict[str, tuple[float, float]] = {}
    for name in INDICATOR_NAMES:
        ind = make_indicator(name, PARAMS[name])
        values = [ind.update(*row) for row in _rows(ind, df)]
        refs = [col.to_numpy(dtype=float) for col in _ta(name, ind, df)]
        worst_abs = worst_rel = 0.0
        for i in range(ind.warmup - 1, len(values)):
            for ours, ref in zip(_fields(values[i]), refs, strict=True):
                err = abs(ours - ref[i])
                if not err <= 1e300:  # NaN: a value where ta has none, or the reverse
                    raise RuntimeError(f"{name} bar {i}: ours {ours}, ta {ref[i]}")
                worst_abs = max(worst_abs, err)
                worst_rel = max(worst_rel, err / max(1.0, abs(ref[i])))
        out[name] = (worst_abs, worst_rel)
    return out


def _bollinger_vs_exact(df: pd.DataFrame) -> dict[str, float]:
    """Max abs error of our upper band and of ta's against the two-pass formula.

    pandas' rolling std (under ta) is a running update that drifts; ours re-sums
    exactly every window. This shows whose error the Bollinger entry above is.
    """
    ind = make_indicator("bollinger", PARAMS["bollinger"])
    w, k = ind.params["window"], ind.params["num_std"]
    values = [ind.update(x) for x in df["close"].tolist()][w - 1 :]
    ours = np.array([v.upper for v in values if v is not None])
    windows = np.lib.stride_tricks.sliding_window_view(df["close"].to_numpy(), w)
    exact = windows.mean(axis=1) + k * windows.std(axis=1, ddof=0)
    theirs = _ta("bollinger", ind, df)[1].to_numpy()[w - 1 :]
    return {
        "ours": float(np.max(np.abs(ours - exact))),
        "ta": float(np.max(np.abs(theirs - exact))),
    }


def _stream_ns(df: pd.DataFrame) -> tuple[dict[str, float], float]:
    """Per indicator ns per update (median of RUNS), and the ns of one bar for all."""
    per: dict[str, list[float]] = {name: [] for name in INDICATOR_NAMES}
    totals: list[int] = []
    for _ in range(RUNS):
        total = 0
        for name in INDICATOR_NAMES:
            ind = make_indicator(name, PARAMS[name])
            rows = _rows(ind, df)
            update = ind.update
            gc.collect()
            start = time.perf_counter_ns()
            for row in rows:
                update(*row)
            elapsed = time.perf_counter_ns() - start
            total += elapsed
            per[name].append(elapsed / len(rows))
        totals.append(total)
    return {k: statistics.median(v) for k, v in per.items()}, statistics.median(totals) / len(df)


def _best_ns(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(TA_REPEATS):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return float(min(times))


def _ta_recompute_ns(df: pd.DataFrame) -> dict[str, float]:
    """ns for ta to compute each indicator over the last RECOMPUTE_BARS bars."""
    tail = df.iloc[-RECOMPUTE_BARS:].reset_index(drop=True)
    out: dict[str, float] = {}
    for name in INDICATOR_NAMES:
        ind = make_indicator(name, PARAMS[name])
        if name == "vwap":  # the rolling ta VWAP over the window is the fair analogue
            out[name] = _best_ns(
                lambda: ta.volume.VolumeWeightedAveragePrice(
                    tail["high"], tail["low"], tail["close"], tail["volume"], RECOMPUTE_BARS
                ).volume_weighted_average_price()
            )
        else:
            out[name] = _best_ns(lambda name=name, ind=ind: _ta(name, ind, tail))
    return out


def run() -> dict:
    """Accuracy, throughput and speedup; the JSON the runner prints."""
    warnings.simplefilter("ignore", RuntimeWarning)  # ta divides by zero in warm-up
    df = _bars()
    log.info("generated %d bars", len(df))
    errors = _errors(df)
    log.info("accuracy checked")
    per_update, bar_ns = _stream_ns(df)
    log.info("streamed: %.0f ns per bar for all %d indicators", bar_ns, len(per_update))
    recompute = _ta_recompute_ns(df)
    speedup = {name: round(recompute[name] / per_update[name]) for name in INDICATOR_NAMES}
    overall = sum(recompute.values()) / sum(per_update.values())
    return {
        "benchmark": "indicators",
        "seed": SEED,
        "bars": N_BARS,
        "indicators": len(INDICATOR_NAMES),
        "python": platform.python_version(),
        "ta": importlib.metadata.version("ta"),
        "max_abs_err_vs_ta": max(a for a, _ in errors.values()),
        "max_rel_err_vs_ta": max(r for _, r in errors.values()),
        "abs_err_vs_ta": {name: a for name, (a, _) in errors.items()},
        "bollinger_upper_abs_err_vs_exact": _bollinger_vs_exact(df),
        "updates_per_s": round(len(INDICATOR_NAMES) * 1e9 / bar_ns),
        "ns_per_update": {name: round(ns) for name, ns in per_update.items()},
        "ta_recompute_us": {name: round(ns / 1e3, 1) for name, ns in recompute.items()},
        "recompute_bars": RECOMPUTE_BARS,
        "speedup_vs_ta_recompute": {"overall": round(overall), "per_indicator": speedup},
    }
