"""Moved to :mod:`brokers.ratelimit`; re-exported for callers not yet updated."""

from brokers.ratelimit import SlidingWindowLimiter, limiter_for, reset_registry

__all__ = ["SlidingWindowLimiter", "limiter_for", "reset_registry"]
