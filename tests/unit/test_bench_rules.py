"""``python -m bench rules --quick`` (what CI runs) and the bench runner's argument handling.

Speed is judged by the benchmark's own numbers, not here: these tests only check that
the quick run completes, prints one JSON line, and that indexed and naive agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.rules import QUICK

ROOT = Path(__file__).resolve().parents[2]

REQUIRED = (
    "rules",
    "symbols",
    "ticks",
    "ticks_per_s",
    "naive_ticks_per_s",
    "speedup",
    "p99_tick_us",
    "fired_match",
    "naive_ticks_measured",
)


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_quick_rules_bench_prints_one_json_line_and_agrees_with_naive():
    result = _bench("rules", "--quick")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    out = json.loads(lines[0])
    for key in REQUIRED:
        assert key in out, key
    assert out["fired_match"] is True
    assert out["quick"] is True
    assert (out["rules"], out["symbols"], out["ticks"]) == (
        QUICK.rules,
        QUICK.symbols,
        QUICK.ticks,
    )
    assert out["naive_ticks_measured"] == QUICK.naive_ticks
    assert out["fired"] > 0
    assert out["ticks_per_s"] > 0 and out["naive_ticks_per_s"] > 0
    assert out["p99_tick_us"] > 0
    assert out["speedup"] > 1


def test_unknown_bench_name_exits_2_with_nothing_on_stdout():
    result = _bench("no_such_bench")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "unknown benchmark" in result.stderr


def test_unknown_rules_option_exits_2():
    result = _bench("rules", "--no-such-option")
    assert result.returncode == 2
    assert result.stdout == ""


def test_arguments_to_a_bench_without_parameters_exit_2():
    result = _bench("rulebook", "--quick")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "takes no arguments" in result.stderr
