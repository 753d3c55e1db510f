"""Prometheus metrics at ``/metrics``, built from the same snapshot as /api/health.

Values are read when scraped (a fresh registry with one collector per scrape), so the
tick path pays nothing: the runner keeps its plain integer counters and this module
reads them. Labels are bounded sets (channel kind, state, source); never a user id,
an e-mail, a symbol or a secret.

Access: with ``METRICS_TOKEN`` set, a scrape must send ``Authorization: Bearer <token>``.
Without it, only a direct loopback client may scrape; a request that came through a
reverse proxy (``X-Forwarded-For``/``Forwarded``) is refused, since the proxy itself
connects from loopback and would otherwise open the endpoint to the world.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config import PROJECT_ROOT
from app.services import ops_status
from app.services.ops_status import OpsStatus

router = APIRouter()

PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


class MetricsSettings(BaseSettings):
    """Read per scrape so a rotated token applies without a restart."""

    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env", env_file_encoding="utf-8", extra="ignore"
    )
    metrics_token: str = ""


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class OpsCollector(Collector):
    """Turns one :class:`OpsStatus` into metric families."""

    def __init__(self, status: OpsStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        st = self.status
        yield _gauge("tickwatch_database_up", "1 if the database answered", float(st.database))
        yield from self._runner(st)
        yield from self._brokers(st)
        yield from self._outbox(st)

    def _runner(self, st: OpsStatus) -> Iterator[Metric]:
        lead, run = st.leadership, st.runner
        yield _gauge(
            "tickwatch_runner_leader",
            "1 if this process holds the runner leadership (or is the only runner)",
            float(lead.is_leader and run.active),
        )
        role = GaugeMetricFamily(
            "tickwatch_runner_role", "This process's runner role", labels=["role", "backend"]
        )
        role.add_metric([lead.role, lead.backend], 1.0)
        yield role
        if lead.fencing_token is not None:
            yield _gauge(
                "tickwatch_runner_fencing_token",
                "Fencing token of the held leadership",
                float(lead.fencing_token),
            )
        here = run.active and st.runner_source == "local"
        yield _gauge("tickwatch_runner_active", "1 if a runner runs here", float(here))
        yield _gauge(
            "tickwatch_runner_figures_from_leader",
            "1 if the runner series below are the leader's, published on the live bus "
            "(this worker does not run the engine)",
            float(st.runner_source == "leader"),
        )
        yield _counter("tickwatch_runner_ticks", "Ticks handled by this runner", run.ticks_seen)
        yield _counter(
            "tickwatch_runner_events_recorded", "Alert events written", run.events_recorded
        )
        yield _counter(
            "tickwatch_runner_candles_stored", "Closed candles stored", run.candles_stored
        )
        yield _gauge("tickwatch_runner_subscribed_symbols", "Symbols streamed live", run.subscribed)
        yield _gauge("tickwatch_runner_rules", "Alert rules loaded", run.rules)
        yield _gauge(
            "tickwatch_runner_symbols_waiting",
            "Symbols waiting for a free broker session slot",
            run.symbols_waiting,
        )
        yield _counter("tickwatch_strategy_signals", "Strategy signals", run.strategy_signals)
        yield _counter("tickwatch_strategy_orders", "Strategy orders placed", run.strategy_orders)
        yield _counter(
            "tickwatch_strategy_failures", "Strategy callback failures", run.strategy_failures
        )
        attachments = GaugeMetricFamily(
            "tickwatch_strategy_attachments", "Enabled strategy attachments", labels=["state"]
        )
        for state, n in sorted(st.attachments.items()):
            attachments.add_metric([state], n)
        yield attachments
        backtests = GaugeMetricFamily(
            "tickwatch_backtest_runs", "Backtest runs queued or running", labels=["status"]
        )
        for state, n in sorted(st.backtests.items()):
            backtests.add_metric([state], n)
        yield backtests

    def _brokers(self, st: OpsStatus) -> Iterator[Metric]:
        sessions = GaugeMetricFamily(
            "tickwatch_broker_sessions",
            "Upstream market-data sessions by state",
            labels=["source", "state"],
        )
        subs = GaugeMetricFamily(
            "tickwatch_broker_subscriptions",
            "Symbols subscribed on upstream sessions",
            labels=["source"],
        )
        by_state: dict[tuple[str, str], int] = {}
        by_source: dict[str, int] = {}
        for s in st.sessions:
            by_state[(s.source, s.state)] = by_state.get((s.source, s.state), 0) + 1
            by_source[s.source] = by_source.get(s.source, 0) + s.subscriptions
        for (source, state), n in sorted(by_state.items()):
            sessions.add_metric([source, state], n)
        for source, n in sorted(by_source.items()):
            subs.add_metric([source], n)
        yield sessions
        yield subs
        yield _counter(
            "tickwatch_broker_reconnects", "Broker stream reconnects", st.runner.reconnects
        )

    def _outbox(self, st: OpsStatus) -> Iterator[Metric]:
        if st.outbox is not None:
            yield _gauge(
                "tickwatch_outbox_pending",
                "Deliveries not yet delivered (pending or in flight)",
                st.outbox.pending,
            )
            yield _gauge("tickwatch_outbox_dead", "Dead-lettered deliveries", st.outbox.dead)
            yield _gauge(
                "tickwatch_outbox_oldest_due_seconds",
                "Age of the oldest due, undelivered delivery",
                st.outbox.oldest_due_seconds,
            )
        failed = CounterMetricFamily(
            "tickwatch_deliveries_failed",
            "Failed delivery attempts by channel kind",
            labels=["channel"],
        )
        recent = GaugeMetricFamily(
            "tickwatch_deliveries_failed_last_hour",
            "Failed attempts of deliveries raised in the last hour, by channel kind",
            labels=["channel"],
        )
        for kind, f in sorted(st.failures.items()):
            failed.add_metric([kind], f.total)
            recent.add_metric([kind], f.last_hour)
        yield failed
        yield recent


def exposition(status: OpsStatus) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OpsCollector(status))
    ProcessCollector(registry=registry)  # this worker's CPU, memory, open files
    return generate_latest(registry)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def allowed(request: Request, token: str) -> bool:
    if token:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        )
    if any(h in request.headers for h in PROXY_HEADERS):
        return False
    return _is_loopback(request.client.host if request.client else None)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    token = MetricsSettings().metrics_token.strip()
    if not allowed(request, token):
        headers = {"WWW-Authenticate": "Bearer"} if token else {}
        return Response("forbidden\n", status_code=401 if token else 403, headers=headers)
    status = await ops_status.gather()
    return Response(exposition(status), media_type=CONTENT_TYPE_LATEST)
