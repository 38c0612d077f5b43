"""`GET /metrics` in the Prometheus text format, read from the hub and the order path's
answer counts when scraped (docs/operations.md lists the metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from livecommerce.commerce.operating import OperatingMetrics
from livecommerce.hub.hub import Hub
from livecommerce.pipeline.stats import OrderStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HubCollector(Collector):
    """Reads the hub's own counters at scrape time: nothing is counted twice."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        hub = self._hub
        yield GaugeMetricFamily(
            "livecommerce_connections",
            "WebSocket connections admitted to rooms",
            value=hub.connections,
        )
        yield GaugeMetricFamily(
            "livecommerce_rooms", "rooms this process serves", value=len(hub.replicas)
        )
        yield CounterMetricFamily(
            "livecommerce_deliveries",
            "messages written to room sockets by broadcasts",
            value=hub.deliveries,
        )
        yield CounterMetricFamily(
            "livecommerce_closed_too_slow",
            "connections closed with 4008 because their buffer filled",
            value=sum(replica.group.closed_too_slow for replica in hub.replicas.values()),
        )


class OrdersCollector(Collector):
    """The order answers this process gave (`OrderStats`), read at scrape time."""

    def __init__(self, stats: OrderStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        answers = CounterMetricFamily(
            "livecommerce_order_answers",
            "order answers this process gave, repeats included, by status and reason",
            labels=["status", "reason"],
        )
        for (status, reason), count in sorted(self._stats.answers.items()):
            answers.add_metric([status, reason], count)
        yield answers
        times = self._stats.answer_seconds
        yield HistogramMetricFamily(
            "livecommerce_order_answer_seconds",
            "time from an order reaching this process to its answer (accepted: durable)",
            buckets=times.cumulative(),
            sum_value=times.sum_s,
        )


class OperatingCollector(Collector):
    """The platform's operating counts (commerce/operating.py) since each feed began: the
    ledger's (embedded: since the ledger began, replay included) and this process's
    traffic. Scaled out, a web process has the traffic alone; the ledger's counts are at
    GET /api/metrics/operating."""

    def __init__(self, feeds: dict[str, OperatingMetrics]) -> None:
        self._feeds = feeds

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "livecommerce_operating",
            "operating counts: orders accepted, paid, settled, refunded; reviews; joins...",
            labels=["name", "feed"],
        )
        for feed, metrics in sorted(self._feeds.items()):
            for name, count in sorted(metrics.totals.items()):
                family.add_metric([name, feed], count)
        yield family


async def metrics(request: Request) -> Response:
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry()
        registry.register(HubCollector(request.app.state.hub))
        stats: OrderStats | None = getattr(request.app.state, "order_stats", None)
        if stats is not None:
            registry.register(OrdersCollector(stats))
        feeds: dict[str, OperatingMetrics] = {}
        activity = getattr(request.app.state, "activity", None)
        if activity is not None:
            feeds["traffic"] = activity
        ledger_metrics = getattr(request.app.state, "ledger_metrics", None)
        if ledger_metrics is not None:
            feeds["ledger"] = ledger_metrics
        if feeds:
            registry.register(OperatingCollector(feeds))
        request.app.state.metrics_registry = registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
