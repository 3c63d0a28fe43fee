"""goim_bench.writer: the message writer's counters read from a server's /metrics page."""

from twisted.trial.unittest import SynchronousTestCase

from goim.metrics import Metrics
from goim_bench.writer import summed, writer_counters, writer_figures


def page(batches: list[int], stores: list[float], acks: list[float], role: str = "standalone") -> str:
    """A /metrics page of a process whose writer stored ``batches`` (sends each) in
    transactions of ``stores`` seconds and ran ack transactions of ``acks`` seconds."""
    metrics = Metrics(role, process=False)
    for size in batches:
        metrics.send_batch.observe(size)
    for seconds in stores:
        metrics.db_seconds.labels("store_sends").observe(seconds)
    for seconds in acks:
        metrics.db_seconds.labels("ack").observe(seconds)
    metrics.db_seconds.labels("sync_page").observe(9.0)  # not the writer's
    return metrics.render().decode()


class WriterCounterTests(SynchronousTestCase):
    def test_counters_of_a_page(self) -> None:
        """Batches, their sends, and each writer transaction's count and time; other transactions are left out."""
        counters = writer_counters(page([3, 5], [0.010, 0.030], [0.002]))
        self.assertEqual(counters["batches"], 2)
        self.assertEqual(counters["batched_sends"], 8)
        self.assertEqual(counters["store_sends_count"], 2)
        self.assertAlmostEqual(counters["store_sends_seconds"], 0.040)
        self.assertEqual(counters["ack_count"], 1)
        self.assertAlmostEqual(counters["ack_seconds"], 0.002)

    def test_a_server_that_has_not_written_yet(self) -> None:
        """A page without the writer's samples (a logic node before its first send) counts zeros."""
        counters = writer_counters(page([], [], []))
        self.assertEqual(set(counters.values()), {0.0})
        self.assertEqual(writer_counters(page([], [], [], role="connect")), counters)

    def test_figures_between_two_readings(self) -> None:
        """Per second, per transaction and busy share come from the difference of two readings."""
        before = writer_counters(page([4], [0.005], []))
        after = writer_counters(page([4, 10, 20], [0.005, 0.010, 0.030], [0.004, 0.006]))
        self.assertEqual(
            writer_figures(before, after, 2.0),
            {
                "transactions_per_s": 1.0,
                "sends_per_transaction": 15.0,
                "transaction_ms": 20.0,
                "busy_share": 0.02,
                "ack_transactions_per_s": 1.0,
                "ack_transaction_ms": 5.0,
            },
        )

    def test_no_figures_without_both_readings_or_work(self) -> None:
        """A missing reading gives no figures; a span without transactions gives rates of zero, no means."""
        reading = writer_counters(page([2], [0.001], []))
        self.assertIsNone(writer_figures(None, reading, 1.0))
        self.assertIsNone(writer_figures(reading, None, 1.0))
        idle = writer_figures(reading, reading, 1.0)
        assert idle is not None
        self.assertEqual(idle["transactions_per_s"], 0.0)
        self.assertIsNone(idle["sends_per_transaction"])
        self.assertIsNone(idle["transaction_ms"])

    def test_logic_nodes_add_up(self) -> None:
        """Several logic nodes' counters are summed key by key."""
        a = writer_counters(page([2], [0.010], [], role="logic"))
        b = writer_counters(page([6], [0.030], [0.001], role="logic"))
        total = summed([a, b])
        self.assertEqual(total["batches"], 2)
        self.assertEqual(total["batched_sends"], 8)
        self.assertAlmostEqual(total["store_sends_seconds"], 0.040)
        self.assertEqual(total["ack_count"], 1)
