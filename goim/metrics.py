"""Prometheus metrics of one process (served at ``/metrics``).

Each process has its own registry (not prometheus_client's global one), so tests
and several services in one process do not share counters. A process exports
only the families its role produces (``ROLE_FAMILIES``), plus the process
collector's ``process_*`` families (resident memory, CPU seconds, open fds ...).
"""

from typing import Callable, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

#: the metric families each role exports (docs/operations.md); a family a role
#: does not produce would only ever show zeros there
ROLE_FAMILIES: Final[dict[str, frozenset[str]]] = {
    "standalone": frozenset(
        {"connections", "sign_ins", "sends", "send_batch", "deliveries", "sync_messages", "db_seconds", "gc"}
    ),
    "logic": frozenset(
        {"sign_ins", "sends", "send_batch", "deliveries", "sync_messages", "db_seconds", "redis_seconds", "gc"}
    ),
    "connect": frozenset({"connections", "redis_seconds", "gc"}),
}


class Metrics:
    """The counters goim keeps; components take one in their constructor.

    Every attribute exists in every role (so components need no checks); the ones
    the role does not produce are kept out of the exported registry.

    Args:
        role: ``standalone``, ``logic`` or ``connect``.
        process: also export the process collector's ``process_*`` families (Linux).
    """

    def __init__(self, role: str = "standalone", *, process: bool = True) -> None:
        if role not in ROLE_FAMILIES:
            raise ValueError(f"unknown role {role!r}")
        self.role = role
        self.registry = CollectorRegistry()
        families = ROLE_FAMILIES[role]

        def r(name: str) -> CollectorRegistry | None:
            return self.registry if name in families else None

        self.connections = Gauge("goim_connections", "Signed-in client connections", registry=r("connections"))
        self.sign_ins = Counter(
            "goim_sign_ins_total", "Client sign-ins by result", ["result"], registry=r("sign_ins")
        )
        self.sends = Counter("goim_sends_total", "Message sends by ACK code", ["code"], registry=r("sends"))
        self.send_batch = Histogram(
            "goim_send_batch_size",
            "Sends stored per batch transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r("send_batch"),
        )
        self.deliveries = Counter(
            "goim_deliveries_total", "Stored copies pushed to online connections", registry=r("deliveries")
        )
        self.sync_messages = Counter(
            "goim_sync_messages_total", "Messages returned by sync pages", registry=r("sync_messages")
        )
        self.db_seconds = Histogram(
            "goim_db_transaction_seconds",
            "Database transaction time, retries included",
            ["name"],
            registry=r("db_seconds"),
        )
        self.redis_seconds = Histogram(
            "goim_redis_command_seconds", "Redis command time", ["command"], registry=r("redis_seconds")
        )
        self.gc_full_seconds = Histogram(
            "goim_gc_full_seconds",
            "Pauses of the paced full garbage collections (goim.heap)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r("gc"),
        )
        if process:
            ProcessCollector(registry=self.registry)

    def track_connections(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the connection gauge at every scrape."""
        self.connections.set_function(count)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
