"""Prometheus metrics of one process (served at ``/metrics``).

Each process has its own registry (not prometheus_client's global one), so tests
and several services in one process do not share counters.
"""

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The counters goim keeps; components take one in their constructor."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("goim_connections", "Signed-in client connections", registry=r)
        self.sign_ins = Counter("goim_sign_ins_total", "Client sign-ins by result", ["result"], registry=r)
        self.sends = Counter("goim_sends_total", "Message sends by ACK code", ["code"], registry=r)
        self.send_batch = Histogram(
            "goim_send_batch_size",
            "Sends stored per batch transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.deliveries = Counter("goim_deliveries_total", "Stored copies pushed to online connections", registry=r)
        self.sync_messages = Counter("goim_sync_messages_total", "Messages returned by sync pages", registry=r)
        self.db_seconds = Histogram(
            "goim_db_transaction_seconds", "Database transaction time, retries included", ["name"], registry=r
        )
        self.redis_seconds = Histogram("goim_redis_command_seconds", "Redis command time", ["command"], registry=r)

    def track_connections(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the connection gauge at every scrape."""
        self.connections.set_function(count)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
