"""Logging: plain lines for a terminal, JSON lines when LOG_JSON=true (production)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


_SECRET_IN_TEXT = re.compile(
    r"(?i)(bearer\s+|tw_session=|(?:access_|refresh_)?token=|secret=|appsecret=|password=)"
    r"[^\s&;,\"']+"
)


def redact(text: str) -> str:
    """Last line of defence: our code never logs secrets, but a library's exception
    text may carry a bearer header or a token in a URL."""
    return _SECRET_IN_TEXT.sub(r"\1***", text)


def _task_name() -> str | None:
    """The asyncio task logging (``runner-ticks``, ``deliver-discord:3``...), if any."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return None
    return task.get_name() if task is not None else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line. ``pid`` tells the workers of a multi-worker deployment
    apart (their lines interleave in one stream); ``where`` finds the line in the code."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
            "pid": record.process,
            "task": _task_name(),
            "where": f"{record.module}:{record.lineno}",
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            body["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(body, ensure_ascii=False, default=str)


class SharedTokenDeltaFilter(logging.Filter):
    """Drops Reflex's warning for deltas addressed to our shared ``user-*`` tokens.

    The runner writes to a shared token, which is not a browser; Reflex fans the
    change out to the linked tabs and also tries the token itself, which is
    expected and harmless, but would otherwise log twice a second per user.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Attempting to send delta") and "'user-" in msg)


def configure_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    reflex_app = logging.getLogger("reflex.app")
    if not any(isinstance(f, SharedTokenDeltaFilter) for f in reflex_app.filters):
        reflex_app.addFilter(SharedTokenDeltaFilter())
    # A library's request log must never carry a token-bearing URL or header.
    for noisy in ("httpx", "httpcore", "aiosqlite", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
