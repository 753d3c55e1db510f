"""Logging: plain lines for a terminal, JSON lines when LOG_JSON=true (production)."""

from __future__ import annotations

import json
import logging
import sys

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
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
