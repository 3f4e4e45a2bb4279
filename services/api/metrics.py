"""Prometheus metrics of the API process, on a registry of its own (one per app)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they only add noise to dashboards


class _PublishedCounter(Collector):
    """Events published by every process, counted in Redis by the publish script; refreshed per scrape."""

    def __init__(self) -> None:
        self.value = 0.0

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "litminer_events_published", "Events published by all litminer processes (from Redis).", value=self.value
        )


class Metrics:
    """Connection gauges and event counters of one API process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.published = _PublishedCounter()
        self.registry.register(self.published)
        self.connections = Gauge(
            "litminer_open_connections", "Open live-event connections.", ["protocol"], registry=self.registry
        )
        self.received = Counter(
            "litminer_events_received", "Events this API process received from Redis.", registry=self.registry
        )
        self.delivered = Counter(
            "litminer_events_delivered", "Events sent to live subscribers.", ["protocol"], registry=self.registry
        )
        self.dropped = Counter(
            "litminer_events_dropped",
            "Events not sent because their subscriber fell behind and was disconnected.",
            ["protocol"],
            registry=self.registry,
        )
        self.resubscribed = Counter(
            "litminer_event_resubscriptions",
            "Times the Redis event subscription was lost and re-established.",
            registry=self.registry,
        )
        self.slow_disconnects = Counter(
            "litminer_slow_subscribers_disconnected",
            "Subscribers disconnected because their queue was full.",
            ["protocol"],
            registry=self.registry,
        )
        for protocol in ("websocket", "sse"):  # export zeros before the first connection
            for family in (self.connections, self.delivered, self.dropped, self.slow_disconnects):
                family.labels(protocol)
