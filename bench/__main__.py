"""``python -m bench NAME [ARGS...]``: run ``bench/NAME.py``'s ``run()``, print the result as JSON.

Extra arguments are handed to ``run(argv)`` for benchmarks whose ``run`` takes one
(e.g. ``python -m bench rules --quick``); giving them to a benchmark whose ``run()``
takes none is a usage error.

stdout carries exactly one line, the JSON object, so results can be piped into files
and compared across commits; every diagnostic goes to stderr through logging.
``python -m bench`` alone lists the benchmarks, one name a line.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import pkgutil
import sys
from collections.abc import Sequence

import bench

log = logging.getLogger("bench")


def available() -> list[str]:
    """Benchmark names: the modules of this package, minus the runner itself."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(bench.__path__)
        if not info.name.startswith("_") and not info.ispkg
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for usage errors)."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    names = available()
    if not args:
        sys.stdout.write("".join(f"{name}\n" for name in names))
        return 0
    name, rest = args[0], args[1:]
    if name not in names:
        sys.stderr.write(
            f"usage: python -m bench NAME [ARGS...]\nunknown benchmark {name!r}; "
            f"available: {', '.join(names) or '(none)'}\n"
        )
        return 2
    module = importlib.import_module(f"bench.{name}")
    if inspect.signature(module.run).parameters:
        result = module.run(rest)
    elif rest:
        sys.stderr.write(f"usage: python -m bench {name}\n{name!r} takes no arguments\n")
        return 2
    else:
        result = module.run()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
