"""The message pipeline on SQLite and MariaDB: rules, sequences, dedupe, batching, faults."""

from typing import Any, Coroutine

import pymysql.connections
from twisted.internet import defer, reactor
from twisted.internet import task
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from goim.logic.messages import MessageService, SendBudget

from goim.storage.database import Txn
from goim.types import (
    SEND_INTERNAL_ERROR,
    SEND_INVALID,
    SEND_NO_SUCH_USER,
    SEND_NOT_FRIEND,
    SEND_NOT_IN_GROUP,
    SEND_OK,
    SEND_RATE_LIMITED,
    SendRequest,
    SendResult,
    StoredMessage,
)
from tests.support.db import MySQLBackend, SQLiteBackend
from tests.support.services import Services, to_group, to_user


class TurnClock(Clock):
    """A task.Clock whose calls for "the end of this turn" (delay 0) run on the reactor."""

    def callLater(self, delay: float, callable: Any, *args: Any, **kw: Any) -> Any:
        if delay == 0:
            return reactor.callLater(0, callable, *args, **kw)
        return super().callLater(delay, callable, *args, **kw)


def start(coroutine: Coroutine[Any, Any, Any]) -> defer.Deferred[Any]:
    return defer.Deferred.fromCoroutine(coroutine)


class MessageTests:
    """Mixed into one TestCase per backend."""

    services: Services

    async def setup_services(self: Any) -> Services:
        self.services = Services(await self.make_database(), reactor)
        return self.services

    async def all_messages(self, user_id: int) -> list[StoredMessage]:
        page = await self.services.messages.sync_page(user_id, 0, 1000)
        return page.messages

    async def friends(self, number_a: str, number_b: str) -> tuple[tuple[int, int], tuple[int, int]]:
        s = self.services
        a, device_a, _ = await s.new_user(number_a)
        b, device_b, _ = await s.new_user(number_b)
        await s.social.add_friend(a, b, "")
        return (a, device_a), (b, device_b)

    async def test_one_to_one_stores_a_copy_for_both(self: Any) -> None:
        """A 1:1 send between friends stores one copy per party and ACKs the sender's seq."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        result = await s.messages.send(to_user(a, da, b, 1, "hello"))
        self.assertEqual(result.code, SEND_OK)
        self.assertGreater(result.message_id, 0)
        self.assertEqual(result.seq, 1)
        for user in (a, b):
            [copy] = await self.all_messages(user)
            self.assertEqual(
                (copy.user_id, copy.seq, copy.message_id, copy.sender_id, copy.sender_device_id, copy.content),
                (user, 1, result.message_id, a, da, "hello"),
            )
        self.assertEqual(sorted(m.user_id for m in s.delivery.delivered), sorted([a, b]))

    async def test_first_message_of_a_new_user_has_seq_1(self: Any) -> None:
        """A brand-new user's first stored copy has sync_sequence 1 (not 0)."""
        s = await self.setup_services()
        (a, da), (b, db_) = await self.friends("a", "b")
        await s.messages.send(to_user(a, da, b, 1))
        await s.messages.send(to_user(b, db_, a, 1))
        self.assertEqual([m.seq for m in await self.all_messages(b)], [1, 2])
        self.assertEqual([m.seq for m in await self.all_messages(a)], [1, 2])

    async def test_stranger_gets_code_2(self: Any) -> None:
        """Sending to a user who is not a friend is refused with code 2 and stores nothing."""
        s = await self.setup_services()
        a, da, _ = await s.new_user("a")
        b, _, _ = await s.new_user("b")
        result = await s.messages.send(to_user(a, da, b, 1))
        self.assertEqual(result, SendResult(SEND_NOT_FRIEND))
        self.assertEqual(await self.all_messages(a), [])
        self.assertEqual(await self.all_messages(b), [])

    async def test_unknown_user_gets_code_6(self: Any) -> None:
        """Sending to a user id that names no user is refused with code 6 ("no such
        user"), in the same batch as a send to a stranger that still gets code 2."""
        s = await self.setup_services()
        a, da, _ = await s.new_user("a")
        b, _, _ = await s.new_user("b")
        results = await defer.gatherResults(
            [start(s.messages.send(to_user(a, da, b + 1000, 1))), start(s.messages.send(to_user(a, da, b, 2)))]
        )
        self.assertEqual([r.code for r in results], [SEND_NO_SUCH_USER, SEND_NOT_FRIEND])
        self.assertEqual(await self.all_messages(a), [])

    async def test_deleted_friendship_takes_effect_at_once(self: Any) -> None:
        """After a friend is deleted the very next send is refused."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        self.assertEqual((await s.messages.send(to_user(a, da, b, 1))).code, SEND_OK)
        await s.social.delete_friend(b, a)
        self.assertEqual((await s.messages.send(to_user(a, da, b, 2))).code, SEND_NOT_FRIEND)

    async def test_invalid_sends_get_code_4(self: Any) -> None:
        """Unknown receiver type, non-positive receiver, empty or oversize content: code 4."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        bad = [
            SendRequest(da, a, 3, b, 1, "x", 1, 0),
            SendRequest(da, a, 1, 0, 1, "x", 2, 0),
            to_user(a, da, b, 3, ""),
            to_user(a, da, b, 4, "é" * (s.messages.max_content // 2 + 1)),
        ]
        for request in bad:
            self.assertEqual(await s.messages.send(request), SendResult(SEND_INVALID))
        ok = await s.messages.send(to_user(a, da, b, 5, "x" * s.messages.max_content))
        self.assertEqual(ok.code, SEND_OK)

    async def test_group_send_reaches_every_member(self: Any) -> None:
        """A group of 200 members: one send stores 200 copies and bumps each member's seq by one."""
        s = await self.setup_services()
        owner, device, _ = await s.new_user("owner")
        others = [(await s.new_user(f"m{i}"))[0] for i in range(199)]
        group_id = await s.social.create_group(owner, "big", others)
        first = await s.messages.send(to_group(owner, device, group_id, 1))
        second = await s.messages.send(to_group(owner, device, group_id, 2))
        self.assertEqual((first.code, first.seq, second.seq), (SEND_OK, 1, 2))
        for member in [owner, *others]:
            copies = await self.all_messages(member)
            self.assertEqual([(m.seq, m.message_id) for m in copies], [(1, first.message_id), (2, second.message_id)])
        self.assertEqual(len(s.delivery.delivered), 400)

    async def test_group_rules(self: Any) -> None:
        """Non-members and unknown groups get code 3; a removed member stops getting copies."""
        s = await self.setup_services()
        owner, device, _ = await s.new_user("owner")
        member, member_device, _ = await s.new_user("member")
        outsider, outsider_device, _ = await s.new_user("outsider")
        group_id = await s.social.create_group(owner, "g", [member])
        self.assertEqual((await s.messages.send(to_group(outsider, outsider_device, group_id, 1))).code, SEND_NOT_IN_GROUP)
        self.assertEqual((await s.messages.send(to_group(owner, device, 999999, 1))).code, SEND_NOT_IN_GROUP)
        self.assertEqual((await s.messages.send(to_group(owner, device, group_id, 2))).code, SEND_OK)
        await s.social.remove_members(owner, group_id, [member])
        self.assertEqual((await s.messages.send(to_group(owner, device, group_id, 3))).code, SEND_OK)
        self.assertEqual((await s.messages.send(to_group(member, member_device, group_id, 1))).code, SEND_NOT_IN_GROUP)
        self.assertEqual(len(await self.all_messages(member)), 1)
        self.assertEqual(len(await self.all_messages(owner)), 2)
        self.assertEqual(await self.all_messages(outsider), [])

    async def test_concurrent_senders_get_gapless_sequences(self: Any) -> None:
        """100 concurrent sends from 10 senders: the receiver's seqs are 1..100, each sender's in order."""
        s = await self.setup_services()
        receiver, _, _ = await s.new_user("receiver")
        senders = []
        for i in range(10):
            user, device, _ = await s.new_user(f"sender{i}")
            await s.social.add_friend(user, receiver, "")
            senders.append((user, device))
        sends = [
            start(s.messages.send(to_user(user, device, receiver, n, f"{user}:{n}")))
            for n in range(1, 11)
            for user, device in senders
        ]
        results = await defer.gatherResults(sends)
        self.assertTrue(all(r.code == SEND_OK for r in results))
        copies = await self.all_messages(receiver)
        self.assertEqual([m.seq for m in copies], list(range(1, 101)))
        for user, _ in senders:
            mine = [int(m.content.split(":")[1]) for m in copies if m.sender_id == user]
            self.assertEqual(mine, list(range(1, 11)))
        self.assertEqual(len({m.message_id for m in copies}), 100)

    async def test_two_writers_keep_every_stream_gapless(self: Any) -> None:
        """Two logic nodes' writers on one database store overlapping users' sends at
        once, some sent again on the other node (a client's retry after a failover):
        every user's seqs are 1..n and every send is stored once."""
        s = await self.setup_services()
        other = Services(s.db, reactor)
        users = [await s.new_user(f"u{i}") for i in range(4)]
        for i, (user, _, _) in enumerate(users):
            for friend, _, _ in users[i + 1 :]:
                await s.social.add_friend(user, friend, "")
        sends = []
        for n in range(1, 16):
            for i, (user, device, _) in enumerate(users):
                request = to_user(user, device, users[(i + 1 + n % 3) % 4][0], n, f"{user}:{n}")
                nodes = [s, other] if n % 5 == 0 else [(s, other)[n % 2]]
                sends += [start(node.messages.send(request)) for node in nodes]
        results = await defer.gatherResults(sends)
        # and one more each afterwards, which must follow on without a gap
        for i, (user, device, _) in enumerate(users):
            results.append(await s.messages.send(to_user(user, device, users[(i + 1) % 4][0], 16, f"{user}:16")))
        self.assertEqual({r.code for r in results}, {SEND_OK})
        sent, total = set(), 0
        for user, _, _ in users:
            copies = await self.all_messages(user)
            self.assertEqual([m.seq for m in copies], list(range(1, len(copies) + 1)))
            sent |= {m.content for m in copies if m.sender_id == user}
            total += len(copies)
        # 64 distinct sends, each one copy for its sender and one for its receiver
        self.assertEqual((len(sent), total), (64, 128))

    async def test_sends_are_batched(self: Any) -> None:
        """The sends of one reactor turn share a transaction (the first does not go alone);
        sends queued while a batch is written go into the next batch."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        batches: list[int] = []
        later: list[defer.Deferred[Any]] = []
        store_sends = s.message_store.store_sends

        async def counting(sends: Any, decide: Any, now_ms: int) -> Any:
            batches.append(len(sends))
            if len(batches) == 1:
                later.extend(start(s.messages.send(to_user(a, da, b, n))) for n in range(11, 16))
            return await store_sends(sends, decide, now_ms)

        s.message_store.store_sends = counting  # type: ignore[method-assign]
        results = await defer.gatherResults([start(s.messages.send(to_user(a, da, b, n))) for n in range(1, 11)])
        results += await defer.gatherResults(later)
        self.assertEqual([r.code for r in results], [SEND_OK] * 15)
        self.assertEqual([r.seq for r in results], list(range(1, 16)))
        self.assertEqual(batches, [10, 5])

    async def test_ack_comes_before_delivery(self: Any) -> None:
        """A send is answered before its batch's copies go to delivery (the sender's ACK leads the pushes)."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        seen: list[int] = []
        d = start(s.messages.send(to_user(a, da, b, 1)))
        d.addCallback(lambda result: seen.append(len(s.delivery.delivered)) or result)
        self.assertEqual((await d).code, SEND_OK)
        self.assertEqual(seen, [0])
        await s.messages.drain()
        self.assertEqual(len(s.delivery.delivered), 2)

    async def test_drain_waits_for_queued_sends(self: Any) -> None:
        """drain() returns once every send accepted before it is written."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        sends = [start(s.messages.send(to_user(a, da, b, n))) for n in range(1, 21)]
        await s.messages.drain()
        self.assertEqual(s.messages.queued, 0)
        for d in sends:
            self.assertEqual(self.successResultOf(d).code, SEND_OK)

    async def test_retry_is_answered_with_the_first_ack(self: Any) -> None:
        """A sequential retry of (device, send_sequence) stores nothing and returns the first ACK."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        first = await s.messages.send(to_user(a, da, b, 7, "once"))
        again = await s.messages.send(to_user(a, da, b, 7, "once"))
        self.assertEqual(first, again)
        self.assertEqual(len(await self.all_messages(b)), 1)
        self.assertEqual(len(s.delivery.delivered), 2, "a duplicate is not delivered again")

    async def test_concurrent_retries_store_once(self: Any) -> None:
        """Retries issued before the first attempt's result (same batch and next batch) store once."""
        s = await self.setup_services()
        (a, da), (b, db_) = await self.friends("a", "b")
        # warm-up keeps the writer busy, so the duplicates below land in one batch together
        warm_up = start(s.messages.send(to_user(b, db_, a, 1)))
        attempts = [start(s.messages.send(to_user(a, da, b, 1, "dup"))) for _ in range(3)]
        results = await defer.gatherResults([warm_up, *attempts])
        self.assertEqual(len({(r.code, r.message_id, r.seq) for r in results[1:]}), 1)
        self.assertEqual([m.content for m in await self.all_messages(b)], ["hi", "dup"])

    async def test_duplicates_within_one_batch_store_once(self: Any) -> None:
        """Two sends with the same key that reach the store in one batch store one copy set."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        from goim.logic.messages import decide
        from goim.storage.messages import PendingSend

        request = to_user(a, da, b, 5)
        outcomes = await s.message_store.store_sends(
            [PendingSend(request, 900001, 1), PendingSend(request, 900002, 1)], decide, 0
        )
        self.assertEqual([(o.code, o.message_id, o.seq) for o in outcomes], [(SEND_OK, 900001, 1)] * 2)
        stored = outcomes[0].stored
        assert stored is not None
        self.assertEqual(len(stored), 2)
        self.assertIsNone(outcomes[1].stored)
        self.assertEqual(len(await self.all_messages(b)), 1)

    async def test_copies_beyond_the_two_parties_take_the_next_seqs(self: Any) -> None:
        """Rules that give a 1:1 send a third recipient (more copies than the store
        expects of a 1:1 batch) still store every copy under its user's next seq."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        c, _, _ = await s.new_user("c")
        self.assertEqual((await s.messages.send(to_user(a, da, b, 1))).seq, 1)
        from goim.storage.messages import BatchFacts, PendingSend

        def with_c(request: SendRequest, facts: BatchFacts) -> tuple[int, list[int]]:
            return SEND_OK, sorted({request.user_id, request.receiver_id, c})

        sends = [PendingSend(to_user(a, da, b, 2), 900001, 1), PendingSend(to_user(a, da, b, 3), 900002, 1)]
        outcomes = await s.message_store.store_sends(sends, with_c, 0)
        self.assertEqual([(o.code, o.seq) for o in outcomes], [(SEND_OK, 2), (SEND_OK, 3)])
        self.assertEqual([m.seq for m in await self.all_messages(c)], [1, 2])
        self.assertEqual([await s.message_store.max_seq(u) for u in (a, b, c)], [3, 3, 2])

    async def test_dedupe_survives_a_restart(self: Any) -> None:
        """New service objects on the same database still answer a retry with the first ACK."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        first = await s.messages.send(to_user(a, da, b, 3))
        restarted = Services(s.db, reactor)
        again = await restarted.messages.send(to_user(a, da, b, 3))
        self.assertEqual(first, again)
        self.assertEqual(len(await self.all_messages(b)), 1)

    async def test_sign_in_starts_a_new_epoch(self: Any) -> None:
        """After the device signs in again, a reused send_sequence in the new epoch is a new message."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        before = await s.accounts.device(da)
        assert before is not None
        first = await s.messages.send(to_user(a, da, b, 1, epoch=before.send_epoch))
        await s.accounts.sign_in_user(da, number="a", password="secret-pw")
        after = await s.accounts.device(da)
        assert after is not None
        self.assertEqual(after.send_epoch, before.send_epoch + 1)
        second = await s.messages.send(to_user(a, da, b, 1, epoch=after.send_epoch))
        self.assertNotEqual(first.message_id, second.message_id)
        old_retry = await s.messages.send(to_user(a, da, b, 1, epoch=before.send_epoch))
        self.assertEqual(old_retry, first, "a late retry from the old epoch still dedupes against it")
        self.assertEqual(len(await self.all_messages(b)), 2)

    async def test_queued_send_of_the_old_epoch_keeps_its_key(self: Any) -> None:
        """A send queued before an HTTP sign-in and one with the same number after it are two messages."""
        s = await self.setup_services()
        (a, da), (b, db_) = await self.friends("a", "b")
        device = await s.accounts.device(da)
        assert device is not None
        warm_up = start(s.messages.send(to_user(b, db_, a, 1)))  # keeps the writer busy
        old = start(s.messages.send(to_user(a, da, b, 7, "old", epoch=device.send_epoch)))
        new = start(s.messages.send(to_user(a, da, b, 7, "new", epoch=device.send_epoch + 1)))
        results = await defer.gatherResults([warm_up, old, new])
        self.assertNotEqual(results[1].message_id, results[2].message_id)
        self.assertEqual([m.content for m in await self.all_messages(b)][-2:], ["old", "new"])

    async def test_http_sign_in_ends_the_open_session(self: Any) -> None:
        """Signing a device in again over HTTP ends its open connection through the session port."""
        s = await self.setup_services()
        (a, da), _ = await self.friends("a", "b")
        ended: list[tuple[int, int, str]] = []

        class Sessions:
            def end_session(self, *, device_id: int, user_id: int, reason: str) -> None:
                ended.append((device_id, user_id, reason))

        s.accounts._sessions = Sessions()
        await s.accounts.sign_in_user(da, number="a", password="secret-pw")
        self.assertEqual(ended, [(da, a, "signed in again")])

    async def test_failed_batch_stores_nothing(self: Any) -> None:
        """A failure inside the batch transaction after rows were written leaves nothing; the retry stores once."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        failures = []

        def fail_once(txn: Txn) -> None:
            if not failures:
                failures.append(True)
                [(count,)] = txn.query("SELECT COUNT(*) FROM messages")
                self.assertEqual(count, 2, "the copies were written before the failure")
                raise RuntimeError("injected failure")

        s.message_store.fault_hook = fail_once
        failed = await s.messages.send(to_user(a, da, b, 1))
        self.assertEqual(failed, SendResult(SEND_INTERNAL_ERROR))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(await self.all_messages(a), [])
        self.assertEqual(await self.all_messages(b), [])
        self.assertEqual(await s.message_store.max_seq(b), 0)
        retried = await s.messages.send(to_user(a, da, b, 1))
        self.assertEqual((retried.code, retried.seq), (SEND_OK, 1))
        self.assertEqual(len(await self.all_messages(b)), 1)

    async def test_sync_pages(self: Any) -> None:
        """sync_page returns seq > n ascending, at most limit, and says whether more exist."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        for n in range(1, 6):
            await s.messages.send(to_user(a, da, b, n, str(n)))
        page = await s.messages.sync_page(b, 1, 2)
        self.assertEqual(([m.seq for m in page.messages], page.more), ([2, 3], True))
        page = await s.messages.sync_page(b, 3, 2)
        self.assertEqual(([m.seq for m in page.messages], page.more), ([4, 5], False))
        page = await s.messages.sync_page(b, 5, 2)
        self.assertEqual((page.messages, page.more), ([], False))

    async def test_ack_is_monotonic(self: Any) -> None:
        """An ack raises the device's acknowledged seq; a lower one changes nothing."""
        s = await self.setup_services()
        (a, da), _ = await self.friends("a", "b")
        await s.messages.ack(da, 5)
        await s.messages.ack(da, 3)
        device = await s.account_store.get_device(da)
        assert device is not None
        self.assertEqual(device.acked_seq, 5)

    async def test_acks_are_batched(self: Any) -> None:
        """The acks of one reactor turn share a transaction (the first does not go
        alone), acks that arrive while one is being written share the next; the
        highest seq per device wins."""
        s = await self.setup_services()
        (a, da), (b, db_) = await self.friends("a", "b")
        calls: list[list[tuple[int, int]]] = []
        later: list[defer.Deferred[Any]] = []
        ack_many = s.account_store.ack_many

        async def counting(acks: Any) -> None:
            calls.append(sorted(acks))
            if len(calls) == 1:
                later.extend(start(s.messages.ack(device, seq)) for seq in (11, 12) for device in (da, db_))
            await ack_many(acks)

        def highest(acks: list[tuple[int, int]]) -> dict[int, int]:
            return {device: max(seq for d, seq in acks if d == device) for device, _ in acks}

        s.account_store.ack_many = counting  # type: ignore[method-assign]
        acks = [start(s.messages.ack(device, seq)) for seq in range(1, 11) for device in (da, db_)]
        acks.append(start(s.messages.ack(da, 4)))
        await defer.gatherResults(acks)
        await defer.gatherResults(later)
        self.assertEqual([highest(c) for c in calls], [{da: 10, db_: 10}, {da: 12, db_: 12}])
        for device in (da, db_):
            row = await s.account_store.get_device(device)
            assert row is not None
            self.assertEqual(row.acked_seq, 12)

    async def test_ids_are_unique_across_processes(self: Any) -> None:
        """Two allocators on one database (two logic nodes) never hand out the same id."""
        s = await self.setup_services()
        other = Services(s.db, reactor, id_step=7)
        ids = []
        for _ in range(10):
            ids += await s.ids.take(13)
            ids += await other.ids.take(5)
        self.assertEqual(len(ids), len(set(ids)))

    async def test_ids_refill_before_running_dry(self: Any) -> None:
        """Taking ids below the low-water mark starts a background refill."""
        s = await self.setup_services()
        first = await s.ids.take(1)
        # take() resumed inside the refill's answer to its waiters; a take from
        # there queues its prefetch behind that batch, so start from a fresh turn
        await task.deferLater(reactor, 0, lambda: None)
        calls = []
        reserve = s.message_store.reserve_ids

        async def counting(name: str, step: int) -> range:
            calls.append(step)
            return await reserve(name, step)

        s.message_store.reserve_ids = counting  # type: ignore[method-assign]
        taken = await s.ids.take(85)  # leaves 14 of 100, below the 20 low-water mark
        self.assertEqual(taken[0], first[0] + 1)
        self.assertEqual(len(calls), 1)
        more = await s.ids.take(50)
        self.assertEqual(len(set(first + taken + more)), 136)


class SendBudgetTests(SynchronousTestCase):
    """The token bucket alone, on a task.Clock."""

    def test_refill_cap_and_retry_time(self) -> None:
        clock = Clock()
        budget = SendBudget(rate=10, burst=20, clock=clock)
        self.assertEqual(budget.take(1, 15), 0.0)
        self.assertAlmostEqual(budget.take(1, 10), 0.5)  # 5 left, 10 needed, 10 a second
        self.assertEqual(budget.tokens(1), 5)
        clock.advance(0.5)
        self.assertEqual(budget.take(1, 10), 0.0)
        clock.advance(100)
        self.assertEqual(budget.tokens(1), 20, "never more than the burst")
        budget.adjust(1, -30)
        self.assertEqual(budget.tokens(1), -10)
        self.assertAlmostEqual(budget.take(1, 1), 1.1)

    def test_a_cost_over_the_burst_needs_a_full_bucket(self) -> None:
        clock = Clock()
        budget = SendBudget(rate=1, burst=5, clock=clock)
        self.assertEqual(budget.take(1, 50), 0.0)
        self.assertEqual(budget.tokens(1), -45)
        self.assertAlmostEqual(budget.take(1, 50), 50.0)

    def test_full_buckets_are_forgotten(self) -> None:
        """Memory follows active senders: buckets that refilled are dropped when the table grows."""
        clock = Clock()
        budget = SendBudget(rate=1000, burst=10, clock=clock)
        for user in range(1024):
            budget.take(user, 10)
        self.assertEqual(len(budget), 1024)
        clock.advance(1)
        budget.take(5000, 10)
        self.assertEqual(len(budget), 1)

    def test_refuses_nonsense(self) -> None:
        with self.assertRaises(ValueError):
            SendBudget(rate=0, burst=10, clock=Clock())


class FairnessTests:
    """Send budgets and the fair writer, mixed into one TestCase per backend."""

    services: Services

    async def setup(self: Any, **options: Any) -> tuple[Services, Clock]:
        """Services whose message service has ``options`` and a task.Clock for its budget
        (the writer's start at the end of the reactor turn still runs on the reactor)."""
        s = self.services = Services(await self.make_database(), reactor)
        clock = TurnClock()
        s.messages = MessageService(s.message_store, s.account_store, s.ids, s.delivery, clock, **options)
        return s, clock

    async def copies_of(self, user_id: int) -> list[StoredMessage]:
        return (await self.services.messages.sync_page(user_id, 0, 1000)).messages

    async def group_of(self, s: Services, size: int) -> tuple[int, int, int]:
        """A group of ``size`` members; returns ``(owner, owner's device, group_id)``."""
        owner, device, _ = await s.new_user("owner")
        others = [(await s.new_user(f"member{i}"))[0] for i in range(size - 1)]
        return owner, device, await s.social.create_group(owner, "g", others)

    async def test_pipelined_flood_is_refused_at_the_door(self: Any) -> None:
        """15 sends at once against a budget of 20 copies: 10 stored, 5 answered code 5 with a retry hint."""
        s, clock = await self.setup(send_rate=10, send_burst=20)
        a, da, _ = await s.new_user("a")
        b, _, _ = await s.new_user("b")
        await s.social.add_friend(a, b, "")
        results = await defer.gatherResults([start(s.messages.send(to_user(a, da, b, n))) for n in range(1, 16)])
        self.assertEqual([r.code for r in results], [SEND_OK] * 10 + [SEND_RATE_LIMITED] * 5)
        # 2 copies needed, none left, 10 copies a second: 200 ms
        self.assertEqual({r.retry_after_ms for r in results[10:]}, {200})
        self.assertEqual({(r.message_id, r.seq) for r in results[10:]}, {(0, 0)})
        self.assertEqual(len(await self.copies_of(b)), 10)
        self.assertEqual((await s.messages.send(to_user(a, da, b, 16))).code, SEND_RATE_LIMITED)
        clock.advance(0.2)
        self.assertEqual((await s.messages.send(to_user(a, da, b, 17))).code, SEND_OK)
        # another user's budget is untouched
        self.assertEqual((await s.messages.send(to_user(b, (await s.new_device("b")), a, 1))).code, SEND_OK)

    async def test_refused_send_is_answered_again_after_the_wait(self: Any) -> None:
        """A send refused with code 5 and retried with the same send_sequence later is stored once."""
        s, clock = await self.setup(send_rate=10, send_burst=2)
        a, da, _ = await s.new_user("a")
        b, _, _ = await s.new_user("b")
        await s.social.add_friend(a, b, "")
        self.assertEqual((await s.messages.send(to_user(a, da, b, 1))).code, SEND_OK)
        refused = await s.messages.send(to_user(a, da, b, 2))
        self.assertEqual((refused.code, refused.retry_after_ms), (SEND_RATE_LIMITED, 200))
        clock.advance(refused.retry_after_ms / 1000)
        first = await s.messages.send(to_user(a, da, b, 2))
        self.assertEqual((first.code, first.seq), (SEND_OK, 2))
        clock.advance(1)
        self.assertEqual(await s.messages.send(to_user(a, da, b, 2)), first)
        self.assertEqual([m.seq for m in await self.copies_of(b)], [1, 2])

    async def test_group_sends_cost_one_copy_per_member(self: Any) -> None:
        """A budget of 12 copies takes two sends to a 5-member group, not three."""
        s, _ = await self.setup(send_rate=1, send_burst=12)
        owner, device, group_id = await self.group_of(s, 5)
        results = await defer.gatherResults([start(s.messages.send(to_group(owner, device, group_id, n))) for n in (1, 2, 3)])
        self.assertEqual([r.code for r in results], [SEND_OK, SEND_OK, SEND_RATE_LIMITED])
        self.assertEqual(results[2].retry_after_ms, 3000)  # 5 needed, 2 left, 1 a second
        self.assertEqual(s.messages.budget.tokens(owner), 2)

    async def test_refused_and_duplicate_sends_cost_one_copy(self: Any) -> None:
        """Sends that store nothing (not in the group, a retry of a stored send) give back all but one copy."""
        s, _ = await self.setup(send_rate=1, send_burst=100)
        owner, device, group_id = await self.group_of(s, 5)
        outsider, outsider_device, _ = await s.new_user("outsider")
        self.assertEqual((await s.messages.send(to_group(outsider, outsider_device, group_id, 1))).code, SEND_NOT_IN_GROUP)
        self.assertEqual(s.messages.budget.tokens(outsider), 99)
        first = await s.messages.send(to_group(owner, device, group_id, 1))
        self.assertEqual(s.messages.budget.tokens(owner), 95)
        s.messages._group_sizes.clear()
        self.assertEqual(await s.messages.send(to_group(owner, device, group_id, 1)), first)
        self.assertEqual(s.messages.budget.tokens(owner), 94)

    async def test_a_failed_batch_is_refunded_in_full(self: Any) -> None:
        """A batch that fails answers code 1 and gives every copy back: the retry is not charged twice."""
        s, _ = await self.setup(send_rate=1, send_burst=10)
        a, da, _ = await s.new_user("a")
        b, _, _ = await s.new_user("b")
        await s.social.add_friend(a, b, "")

        def fail(txn: Txn) -> None:
            raise RuntimeError("disk on fire")

        s.message_store.fault_hook = fail
        self.assertEqual((await s.messages.send(to_user(a, da, b, 1))).code, SEND_INTERNAL_ERROR)
        self.assertEqual(s.messages.budget.tokens(a), 10)
        self.flushLoggedErrors(RuntimeError)
        s.message_store.fault_hook = None
        self.assertEqual((await s.messages.send(to_user(a, da, b, 1))).code, SEND_OK)
        self.assertEqual(s.messages.budget.tokens(a), 8)

    async def test_a_send_bigger_than_the_bucket_waits_for_a_full_bucket(self: Any) -> None:
        """A group larger than the burst can still be sent to, once the bucket is full, and leaves a debt."""
        s, clock = await self.setup(send_rate=1, send_burst=3)
        owner, device, group_id = await self.group_of(s, 5)
        self.assertEqual((await s.messages.send(to_group(owner, device, group_id, 1))).code, SEND_OK)
        refused = await s.messages.send(to_group(owner, device, group_id, 2))
        self.assertEqual((refused.code, refused.retry_after_ms), (SEND_RATE_LIMITED, 5000))
        clock.advance(5)
        self.assertEqual((await s.messages.send(to_group(owner, device, group_id, 2))).code, SEND_OK)

    async def test_a_flooding_sender_delays_another_by_at_most_one_batch(self: Any) -> None:
        """A backlog of 40 group sends: another user's send goes into the batch after the one being written."""
        s, _ = await self.setup(max_batch_copies=10)
        owner, device, group_id = await self.group_of(s, 5)
        a, da, _ = await s.new_user("a")
        b, _, _ = await s.new_user("b")
        await s.social.add_friend(a, b, "")
        await s.messages.send(to_group(owner, device, group_id, 1))  # the group's size is known now

        batches: list[list[int]] = []
        gate: defer.Deferred[None] = defer.Deferred()
        entered: defer.Deferred[None] = defer.Deferred()
        store_sends = s.message_store.store_sends

        async def held(sends: Any, decide: Any, now_ms: int) -> Any:
            batches.append([p.request.user_id for p in sends])
            if len(batches) == 1:
                entered.callback(None)
                await gate
            return await store_sends(sends, decide, now_ms)

        s.message_store.store_sends = held  # type: ignore[method-assign]
        flood = [start(s.messages.send(to_group(owner, device, group_id, n))) for n in range(2, 42)]
        await entered  # the first batch is being written, the rest of the flood queued
        self.assertEqual(s.messages.queued, 40 - len(batches[0]))
        other = start(s.messages.send(to_user(a, da, b, 1)))
        gate.callback(None)
        results = await defer.gatherResults([*flood, other])
        self.assertEqual({r.code for r in results}, {SEND_OK})
        self.assertIn(a, batches[1], "the other sender's send is in the next batch")
        self.assertEqual(sum(len(batch) for batch in batches), 41)
        for batch in batches:
            self.assertLessEqual(5 * batch.count(owner) + 2 * batch.count(a), 10, "batches are bounded by copies")
        # the flood is stored in order
        self.assertEqual([m.seq for m in await self.copies_of(owner)], list(range(1, 42)))

    async def test_a_send_bigger_than_a_batch_is_written_alone(self: Any) -> None:
        """A send of more copies than max_batch_copies is its own batch; others are not held back."""
        s, _ = await self.setup(max_batch_copies=3)
        owner, device, group_id = await self.group_of(s, 5)
        results = await defer.gatherResults([start(s.messages.send(to_group(owner, device, group_id, n))) for n in (1, 2, 3)])
        self.assertEqual([r.seq for r in results], [1, 2, 3])


class MessageSQLiteTests(MessageTests, SQLiteBackend, TestCase):
    pass


class MessageMySQLTests(MessageTests, MySQLBackend, TestCase):
    def count_round_trips(self) -> list[str]:
        """From now on, every query and commit PyMySQL sends is appended to the list
        returned, but for the session set-up of a connection the pool opens meanwhile
        (a pool thread's first transaction opens its connection)."""
        trips: list[str] = []
        for name in ("query", "commit"):
            original = getattr(pymysql.connections.Connection, name)

            def counting(connection: Any, *args: Any, _name: str = name, _original: Any = original) -> Any:
                sql = args[0] if args else ""
                if not (sql.decode() if isinstance(sql, bytes) else sql).startswith("SET SESSION "):
                    trips.append(_name)
                return _original(connection, *args)

            self.patch(pymysql.connections.Connection, name, counting)
        return trips

    async def test_a_batch_is_three_round_trips(self) -> None:
        """A batch of one-to-one and group sends reaches MariaDB in three round trips: the
        dedupe, friendship and member reads together, the seqs, the inserts with the COMMIT."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        group_id = await s.social.create_group(a, "g", [b])
        # the group's size is known (a send's admission reads it once) and ids are reserved
        self.assertEqual((await s.messages.send(to_group(a, da, group_id, 1))).seq, 1)
        trips = self.count_round_trips()
        sends = [to_user(a, da, b, 2), to_group(a, da, group_id, 3), to_user(a, da, b, 4)]
        results = await defer.gatherResults([start(s.messages.send(r)) for r in sends])
        self.assertEqual([(r.code, r.seq) for r in results], [(SEND_OK, 2), (SEND_OK, 3), (SEND_OK, 4)])
        self.assertEqual(trips, ["query"] * 3)
        self.assertEqual([m.seq for m in await self.all_messages(b)], [1, 2, 3, 4])

    async def test_a_one_to_one_batch_is_two_round_trips(self) -> None:
        """A batch of 1:1 sends only reaches MariaDB in two round trips: the seqs of the
        copies it will likely store are reserved with the reads, the inserts go with the COMMIT."""
        s = await self.setup_services()
        (a, da), (b, db_) = await self.friends("a", "b")
        self.assertEqual((await s.messages.send(to_user(a, da, b, 1))).seq, 1)  # ids reserved
        trips = self.count_round_trips()
        sends = [to_user(a, da, b, 2), to_user(b, db_, a, 1), to_user(a, da, b, 3)]
        results = await defer.gatherResults([start(s.messages.send(r)) for r in sends])
        self.assertEqual([(r.code, r.seq) for r in results], [(SEND_OK, 2), (SEND_OK, 3), (SEND_OK, 4)])
        self.assertEqual(trips, ["query"] * 2)
        for user in (a, b):
            self.assertEqual([m.seq for m in await self.all_messages(user)], [1, 2, 3, 4])

    async def test_seqs_reserved_for_copies_not_stored_are_given_back(self) -> None:
        """A batch whose guessed copies were not all stored (a send to a non-friend, a send
        already stored) leaves every user's seq at its last stored copy: no gap, nothing lost."""
        s = await self.setup_services()
        (a, da), (b, _) = await self.friends("a", "b")
        c, _, _ = await s.new_user("c")
        first = await s.messages.send(to_user(a, da, b, 1))
        self.assertEqual((first.code, first.seq), (SEND_OK, 1))
        # one batch: a retry of the stored send, a send to a stranger, a new send
        sends = [to_user(a, da, b, 1), to_user(a, da, c, 2), to_user(a, da, b, 3)]
        results = await defer.gatherResults([start(s.messages.send(r)) for r in sends])
        self.assertEqual(
            [(r.code, r.seq) for r in results], [(SEND_OK, 1), (SEND_NOT_FRIEND, 0), (SEND_OK, 2)]
        )
        self.assertEqual([await s.message_store.max_seq(u) for u in (a, b, c)], [2, 2, 0])
        # the next copies follow on without a gap
        self.assertEqual((await s.messages.send(to_user(a, da, b, 4))).seq, 3)
        for user in (a, b):
            self.assertEqual([m.seq for m in await self.all_messages(user)], [1, 2, 3])
        self.assertEqual(await self.all_messages(c), [])


class FairnessSQLiteTests(FairnessTests, SQLiteBackend, TestCase):
    pass


class FairnessMySQLTests(FairnessTests, MySQLBackend, TestCase):
    pass
