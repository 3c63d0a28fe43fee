"""The server's own account of its write path during a phase, from its ``/metrics``.

A latency level says how long sends took; the message writer's counters say why:
how many transactions it ran, how many sends each held and how much of the phase it
spent in them (docs/operations.md lists the families). Read before and after a
phase, on a standalone server or summed over every logic node; a server that does
not serve ``/metrics`` (a target started by someone else, say) gives no figures.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, DeferredList

#: ``goim_db_transaction_seconds`` names the message writer's and the ack writer's transactions by
WRITER_TRANSACTIONS = ("store_sends", "ack")


def writer_counters(text: str) -> dict[str, float]:
    """The write-path counters of one ``/metrics`` page: ``batches``, ``batched_sends``
    and, per transaction name of ``WRITER_TRANSACTIONS``, ``<name>_count`` and
    ``<name>_seconds`` (zero when the server has not run one yet)."""
    counters = dict.fromkeys(
        ["batches", "batched_sends", *(f"{n}_{k}" for n in WRITER_TRANSACTIONS for k in ("count", "seconds"))],
        0.0,
    )
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "goim_send_batch_size_count":
                counters["batches"] += sample.value
            elif sample.name == "goim_send_batch_size_sum":
                counters["batched_sends"] += sample.value
            elif sample.name.startswith("goim_db_transaction_seconds_"):
                name = sample.labels.get("name")
                if name in WRITER_TRANSACTIONS:
                    if sample.name.endswith("_count"):
                        counters[f"{name}_count"] += sample.value
                    elif sample.name.endswith("_sum"):
                        counters[f"{name}_seconds"] += sample.value
    return counters


def summed(pages: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Counters of several processes (every logic node) added up."""
    total: dict[str, float] = {}
    for page in pages:
        for key, value in page.items():
            total[key] = total.get(key, 0.0) + value
    return total


def writer_figures(
    before: Mapping[str, float] | None, after: Mapping[str, float] | None, seconds: float
) -> dict[str, Any] | None:
    """What the message writer did between two readings ``seconds`` apart (None
    without both readings).

    ``busy_share`` is the time its transactions took (a transaction's wait for a
    database connection included) over the span; summed over several logic nodes it
    can pass 1.
    """
    if before is None or after is None:
        return None
    seconds = max(seconds, 1e-9)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    batches = delta("batches")
    stores = delta("store_sends_count")
    acks = delta("ack_count")
    return {
        "transactions_per_s": round(stores / seconds, 1),
        "sends_per_transaction": round(delta("batched_sends") / batches, 2) if batches else None,
        "transaction_ms": round(1000.0 * delta("store_sends_seconds") / stores, 2) if stores else None,
        "busy_share": round(delta("store_sends_seconds") / seconds, 3),
        "ack_transactions_per_s": round(acks / seconds, 1),
        "ack_transaction_ms": round(1000.0 * delta("ack_seconds") / acks, 2) if acks else None,
    }


async def read_counters(urls: Sequence[str], timeout: float = 5.0) -> dict[str, float] | None:
    """The write-path counters summed over the servers at ``urls`` (HTTP base URLs);
    None when any of them cannot be read."""
    if not urls:
        return None

    async def one(url: str) -> dict[str, float]:
        response = await treq.get(url.rstrip("/") + "/metrics", timeout=timeout)
        body = await response.text("utf-8")
        if response.code != 200:
            raise ValueError(f"GET {url}/metrics: HTTP {response.code}")
        return writer_counters(body)

    results = await DeferredList([Deferred.fromCoroutine(one(url)) for url in urls], consumeErrors=True)
    if not all(ok for ok, _ in results):
        return None
    return summed([page for _, page in results])
