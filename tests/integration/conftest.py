"""Fixtures shared by integration modules that need services of their own."""

from tests.integration.private_services import private_pg, private_redis  # noqa: F401
