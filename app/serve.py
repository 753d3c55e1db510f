"""``python -m app.serve [reflex run options]``: ``reflex run --env prod`` whose workers
come back when one crashes.

Reflex starts granian without ``respawn_failed_workers``, and granian's supervisor then
treats one worker's unexpected exit (an OOM kill, a segfault in a native library) as
the end of the whole server: every worker stops and the site is down until someone
restarts it. ``tests/integration/test_workers.py`` saw exactly that when it killed
the runner's worker. With respawn on, the dead worker is replaced, another worker
takes the runner lock (``app/runtime/leader.py``), and the others keep serving.

Granian's own crash-loop guard still applies: a worker dying again within about 5 s
of being respawned stops the server, so a broken deployment does not spin.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def enable_worker_respawn() -> None:
    """Make every granian server this process builds respawn failed workers."""
    from granian.server import Server

    if getattr(Server.__init__, "_tickwatch_respawn", False):
        return
    original = Server.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("respawn_failed_workers", True)
        original(self, *args, **kwargs)

    init._tickwatch_respawn = True  # type: ignore[attr-defined]
    Server.__init__ = init  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    enable_worker_respawn()
    from reflex.reflex import cli

    args = list(sys.argv[1:] if argv is None else argv)
    return int(cli.main(["run", "--env", "prod", *args], standalone_mode=False) or 0)


if __name__ == "__main__":
    sys.exit(main())
