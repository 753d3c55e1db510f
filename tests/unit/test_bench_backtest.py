"""``python -m bench backtest --quick`` (what CI runs): completes, agrees with backtesting.py.

Speed is judged from the benchmark's own numbers, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.backtest import QUICK, run

ROOT = Path(__file__).resolve().parents[2]

REQUIRED = (
    "bars",
    "symbols",
    "seconds",
    "backtesting_py_seconds",
    "bars_per_s",
    "speedup_vs_backtesting_py",
    "trades_equal",
    "goal_speedup",
    "goal_met",
)


def test_quick_backtest_bench_agrees_with_backtesting_py() -> None:
    out = run(["--quick"])
    for key in REQUIRED:
        assert key in out, key
    assert out["trades_equal"] is True
    assert out["final_equity_equal"] is True
    assert out["quick"] is True
    assert (out["symbols"], out["bars"]) == (QUICK.symbols, QUICK.symbols * QUICK.bars)
    assert out["trades"] > QUICK.symbols  # several trades per symbol were compared
    assert out["seconds"] > 0 and out["backtesting_py_seconds"] > 0
    assert out["goal_speedup"] == 5
    json.dumps(out, allow_nan=False)


def test_runner_prints_one_json_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "backtest", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["trades_equal"] is True
