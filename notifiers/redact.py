"""Keep credentials that live in URLs out of log lines.

httpx logs every request URL at INFO, and some channels carry their secret in the
URL itself (Telegram's ``bot<token>``, Discord's ``/api/webhooks/<id>/<token>``).
A filter on the ``httpx`` logger rewrites them before any handler sees the record.
"""

from __future__ import annotations

import logging
import re


class RedactFilter(logging.Filter):
    def __init__(self, pattern: re.Pattern[str], replacement: str) -> None:
        super().__init__()
        self.pattern, self.replacement = pattern, replacement

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return True
        redacted = self.pattern.sub(self.replacement, text)
        if redacted != text:
            record.msg, record.args = redacted, None
        return True


def install(pattern: re.Pattern[str], replacement: str, logger_name: str = "httpx") -> None:
    """Idempotent: one filter per pattern, however many notifiers are built."""
    logger = logging.getLogger(logger_name)
    for f in logger.filters:
        if isinstance(f, RedactFilter) and f.pattern.pattern == pattern.pattern:
            return
    logger.addFilter(RedactFilter(pattern, replacement))
