"""``python -m bench NAME``: run ``bench/NAME.py``'s ``run()`` and print its result as JSON.

stdout carries exactly one line, the JSON object, so results can be piped into files
and compared across commits; every diagnostic goes to stderr through logging.
``python -m bench`` alone lists the benchmarks, one name a line.
"""

from __future__ import annotations

import importlib
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
    if len(args) != 1 or args[0] not in names:
        sys.stderr.write(
            f"usage: python -m bench NAME\nunknown benchmark {' '.join(args)!r}; "
            f"available: {', '.join(names) or '(none)'}\n"
        )
        return 2
    module = importlib.import_module(f"bench.{args[0]}")
    result = module.run()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
