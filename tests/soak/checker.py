"""The soak's model check: the recorded history against the database at the end.

Properties, in the order they are reported (the first violated one is named):

``exactly-once``
    Every send answered with code 0 is stored exactly once for each of its recipient
    users (1:1: sender and receiver; group: every member), under the message id its
    ACK gave (every code-0 ACK of that send gives the same id), and the ACK's
    ``sync_sequence`` is the seq of the sender's copy. A send never answered 0 (given
    up, or its epoch ended) is stored for all its recipients once or not at all.
    Nothing else is stored. A seq a client received names the message the database
    holds there. A retried send (same send_sequence) never yields a second message.

``order`` (per-sender order; a send is identified by the content the soak gave it)
    O1. Sends of one connection that were written once and answered 0 on that
        connection ("clean" sends) appear in every common recipient's stream in the
        order they were written, whatever happened in between (code-1 answers of
        other sends, logic-node failover).
    O2. A send retried on the same connection after code 1 or 5 (every attempt on one
        connection) lands after every clean send written on that connection before
        its first attempt, and before every clean send written after the attempt that
        was answered 0. Between those two points its place is free: a retried send
        may land after sends written after its first attempt (docs/operations.md).
    O4. Across reconnects and takeovers (the client resends its unACKed sends in
        order on the new connection, before new ones): sends of one device and epoch
        that were never answered 1 or 5 and were finally answered 0 are stored in the
        order of their first write (docs/storage.md, "Per-sender order": such sends
        keep their read order in all cases).
    O3. Causality: a send whose code-0 ACK the clients received before another send
        was first written (by any device) is stored before it for every common
        recipient. This is all that is checked for sends retried across connections
        (unanswered when a connection dropped, or re-sent after a takeover).

``dense``
    Every user's seqs are 1..N without gaps, and ``user_seqs`` holds N.

``online-complete``
    After the faults a sentinel message goes to a group of every user. Every
    device's connection that is signed in and open at the end receives it (by push,
    sync or server catch-up: a connection whose presence was lost never does), and
    the device then holds every message of its user (live, by catch-up, or by the
    sync it sends when a push leaves a gap). A connection that was its device's only
    one since it signed in must itself have received every message after the seq it
    synced from (a previous connection still open may legitimately take some pushes).

``session-lost``
    A connection that got SignInACK 1 is never closed without a Kicked frame unless
    its connect node was killed, the client closed it, the device signed in again
    meanwhile, or the node logged a cause docs/protocol.md allows (a failed sync
    read, §7; a send whose outcome is unknown, §5). A Kicked frame needs a cause:
    a later sign-in of the same device (TCP or HTTP).

``one-connection``
    One connection per device (docs/protocol.md §6): when a device signs in again
    (TCP, on either node, or HTTP), its older connection gets Kicked within 20 s.

``health``
    After the faults stop every node's ``/healthz`` answers 200, every connect node
    has both logic nodes and its Redis subscription, and accepts a sign-in.

``acks`` / ``protocol``
    The server answered only sends that were written, with codes the docs allow.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from tests.soak.history import Conn, History, Send

PROPERTIES = ["harness", "exactly-once", "order", "dense", "online-complete", "session-lost", "one-connection",
              "health", "acks", "protocol"]

#: how many examples of each violated property are printed
EXAMPLES = 5


@dataclass
class Row:
    user_id: int
    seq: int
    message_id: int
    sender_device_id: int
    content: str


@dataclass
class Verdict:
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    stats: dict[str, int] = field(default_factory=dict)

    def add(self, prop: str, evidence: str) -> None:
        self.violations[prop].append(evidence)

    @property
    def passed(self) -> bool:
        return not any(self.violations.values())

    @property
    def first(self) -> str | None:
        for prop in PROPERTIES:
            if self.violations.get(prop):
                return prop
        for prop, found in self.violations.items():
            if found:
                return prop
        return None

    def report(self) -> str:
        lines = []
        for prop in [*PROPERTIES, *sorted(set(self.violations) - set(PROPERTIES))]:
            found = self.violations.get(prop) or []
            if not found:
                continue
            lines.append(f"  {prop}: {len(found)} violation(s)")
            for evidence in found[:EXAMPLES]:
                lines.append(f"    - {evidence}")
        return "\n".join(lines)


def check_storage(history: History, rows: list[Row], user_seqs: dict[int, int], verdict: Verdict) -> dict[str, dict[int, int]]:
    """exactly-once and dense. Returns content -> {user_id: seq} of what is stored."""
    by_content: dict[str, list[Row]] = defaultdict(list)
    by_user: dict[int, list[int]] = defaultdict(list)
    stored_at: dict[tuple[int, int], int] = {}
    for row in rows:
        by_content[row.content].append(row)
        by_user[row.user_id].append(row.seq)
        stored_at[(row.user_id, row.seq)] = row.message_id
    known = {send.content: send for send in history.sends}
    content_of_id = {row.message_id: row.content for row in rows}
    placed: dict[str, dict[int, int]] = {}
    ids_of_content: dict[int, str] = {}
    for content, found in by_content.items():
        send = known.get(content)
        if send is None:
            verdict.add("exactly-once", f"stored message {found[0].message_id} {content!r} for users "
                        f"{sorted(r.user_id for r in found)} was never sent by a soak client")
            continue
        for row in found:
            other = ids_of_content.setdefault(row.message_id, content)
            if other != content:
                verdict.add("exactly-once", f"message id {row.message_id} names two sends: {other!r} and {content!r}")
    for send in history.sends:
        found = by_content.get(send.content, [])
        users = [r.user_id for r in found]
        ids = {r.message_id for r in found}
        acked = [a for a in send.attempts if a.code == 0]
        if found:
            placed[send.content] = {r.user_id: r.seq for r in found}
        if len(users) != len(set(users)):
            dupes = sorted({u for u in users if users.count(u) > 1})
            verdict.add("exactly-once", f"{send.describe()} is stored more than once for users {dupes}: "
                        f"seqs {sorted((r.user_id, r.seq) for r in found)}")
        if len(ids) > 1:
            verdict.add("exactly-once", f"{send.describe()} is stored under several message ids {sorted(ids)}")
        if acked:
            if not found:
                swallower = content_of_id.get(acked[0].message_id)
                verdict.add("exactly-once", f"{send.describe()} was ACKed (message {acked[0].message_id}) "
                            f"but is not stored at all" + (
                                f"; message {acked[0].message_id} is {swallower!r} (the ACK of another send: "
                                f"this send was swallowed by dedupe)" if swallower else ""))
                continue
            if set(users) != set(send.recipients):
                verdict.add("exactly-once", f"{send.describe()} was ACKed but is stored for users {sorted(set(users))}, "
                            f"not its recipients {sorted(send.recipients)}")
            acked_ids = {a.message_id for a in acked}
            if len(acked_ids) > 1 or acked_ids != ids:
                verdict.add("exactly-once", f"{send.describe()}: ACKs gave message ids {sorted(acked_ids)}, "
                            f"the database holds {sorted(ids)}")
            own = {r.seq for r in found if r.user_id == send.user_id}
            for a in acked:
                if a.seq and own and a.seq not in own:
                    verdict.add("exactly-once", f"{send.describe()}: ACK said the sender's copy is seq {a.seq}, "
                                f"the database has {sorted(own)}")
        elif found and set(users) != set(send.recipients):
            verdict.add("exactly-once", f"{send.describe()} (never ACKed 0) is stored for only some recipients: "
                        f"{sorted(set(users))} of {sorted(send.recipients)}")
    # what clients received must be what is stored
    for conn in history.conns:
        for seq, mid in conn.received.items():
            held = stored_at.get((conn.user_id, seq))
            if held != mid:
                verdict.add("exactly-once", f"conn {conn.serial} (user {conn.user_id}) received seq {seq} as message "
                            f"{mid}; the database holds {held}")
                break
    # dense
    for user, seqs in sorted(by_user.items()):
        seqs.sort()
        if seqs != list(range(1, len(seqs) + 1)):
            holes = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))[:10]
            dupes = sorted({s for s in seqs if seqs.count(s) > 1})[:10]
            verdict.add("dense", f"user {user}: seqs are not 1..{len(seqs)} (missing {holes}, repeated {dupes}, "
                        f"highest {seqs[-1]})")
        top = user_seqs.get(user)
        if top is not None and top != (seqs[-1] if seqs else 0):
            verdict.add("dense", f"user {user}: user_seqs says {top}, the highest stored seq is {seqs[-1]}")
    verdict.stats["stored_copies"] = len(rows)
    verdict.stats["sends"] = len(history.sends)
    verdict.stats["sends_acked"] = sum(1 for s in history.sends if s.acked is not None)
    verdict.stats["sends_retried"] = sum(1 for s in history.sends if len(s.attempts) > 1)
    verdict.stats["sends_abandoned"] = sum(1 for s in history.sends if s.abandoned and s.acked is None)
    return placed


def _first_inversion(entries: list[tuple[int, int, Send]]) -> tuple[Send, int, Send, int] | None:
    """entries (write index, seq, send) sorted by write index: the first pair out of seq order."""
    best: tuple[int, Send] | None = None
    for _, seq, send in entries:
        if best is not None and seq <= best[0]:
            return best[1], best[0], send, seq
        if best is None or seq > best[0]:
            best = (seq, send)
    return None


def check_order(history: History, placed: dict[str, dict[int, int]], verdict: Verdict) -> None:
    """O1, O2, O3 (see the module docstring)."""
    clean_by_conn: dict[int, list[Send]] = defaultdict(list)
    for send in history.sends:
        if send.clean and send.content in placed:
            clean_by_conn[send.attempts[0].conn].append(send)
    # O1
    for conn, sends in clean_by_conn.items():
        sends.sort(key=lambda s: s.attempts[0].index)
        users: set[int] = set()
        for send in sends:
            users |= set(placed[send.content])
        for user in sorted(users):
            entries = [(s.attempts[0].index, placed[s.content][user], s) for s in sends if user in placed[s.content]]
            inversion = _first_inversion(entries)
            if inversion is not None:
                a, sa, b, sb = inversion
                verdict.add("order", f"O1 conn {conn}: {a.describe()} was written before {b.describe()}, but user "
                            f"{user} has them at seqs {sa} and {sb}")
    # O2
    for send in history.sends:
        if send.clean or send.content not in placed or send.acked is None:
            continue
        conns = {a.conn for a in send.attempts}
        if len(conns) != 1:
            continue
        conn = next(iter(conns))
        first = send.attempts[0].index
        answered = min(a.index for a in send.attempts if a.code == 0)
        for other in clean_by_conn.get(conn, []):
            index = other.attempts[0].index
            for user, seq in placed[send.content].items():
                other_seq = placed[other.content].get(user)
                if other_seq is None:
                    continue
                if index < first and not other_seq < seq:
                    verdict.add("order", f"O2 conn {conn}: {other.describe()} was written before the first attempt "
                                f"of {send.describe()}, but user {user} has them at seqs {other_seq} and {seq}")
                if index > answered and not seq < other_seq:
                    verdict.add("order", f"O2 conn {conn}: {other.describe()} was written after the attempt of "
                                f"{send.describe()} that was answered 0, but user {user} has them at seqs "
                                f"{seq} and {other_seq}")
    # O4
    streams: dict[tuple[int, int], list[Send]] = defaultdict(list)
    for send in history.sends:
        if (send.content in placed and send.acked is not None and send.attempts
                and not any(a.code in (1, 5) for a in send.attempts)):
            streams[(send.device_id, send.epoch)].append(send)
    for (device, epoch), sends in streams.items():
        sends.sort(key=lambda s: s.attempts[0].written_at)
        users = set()
        for send in sends:
            users |= set(placed[send.content])
        for user in sorted(users):
            entries = [(s.attempts[0].written_at, placed[s.content][user], s) for s in sends if user in placed[s.content]]
            inversion = _first_inversion(entries)
            if inversion is not None:
                a, sa, b, sb = inversion
                verdict.add("order", f"O4 device {device} epoch {epoch}: {a.describe()} was first written before "
                            f"{b.describe()} and neither was answered 1 or 5, but user {user} has them at seqs "
                            f"{sa} and {sb}")
    # O3
    per_user: dict[int, list[tuple[int, int, Send]]] = defaultdict(list)  # user -> (ack tick, seq, send)
    for send in history.sends:
        acked = send.acked
        if acked is None or send.content not in placed:
            continue
        ack_tick = min(a.answered_at for a in send.attempts if a.code == 0)
        for user, seq in placed[send.content].items():
            per_user[user].append((ack_tick, seq, send))
    prefix: dict[int, tuple[list[int], list[tuple[int, Send]]]] = {}
    for user, entries in per_user.items():
        entries.sort(key=lambda e: e[0])
        ticks = [e[0] for e in entries]
        best: list[tuple[int, Send]] = []
        for _, seq, send in entries:
            best.append((seq, send) if not best or seq > best[-1][0] else best[-1])
        prefix[user] = (ticks, best)
    for send in history.sends:
        if send.content not in placed or not send.attempts:
            continue
        written = min(a.written_at for a in send.attempts)
        for user, seq in placed[send.content].items():
            if user not in prefix:
                continue
            ticks, best = prefix[user]
            i = bisect.bisect_left(ticks, written)
            if i and best[i - 1][0] >= seq:
                before, before_send = best[i - 1]
                verdict.add("order", f"O3: {before_send.describe()} was ACKed before {send.describe()} was written, "
                            f"but user {user} has them at seqs {before} and {seq}")


def check_online(online: Iterable[tuple[Conn, set[int]]], marks: dict[int, int], rows: list[Row],
                 verdict: Verdict, conns: list[Conn] | None = None) -> None:
    """online-complete: every device signed in at the end holds all its user's messages,
    and its connection received the sentinel (the last message, sent after the faults).
    A connection that was its device's only one since it signed in must have received
    every message after the seq it synced from itself."""
    seqs: dict[int, set[int]] = defaultdict(set)
    for row in rows:
        seqs[row.user_id].add(row.seq)
    for conn, held in online:
        alone = conns is not None and not any(
            other.device_id == conn.device_id and other.serial != conn.serial and other.signed_in
            and other.signin_at < conn.signin_at and (other.closed_tick == 0 or other.closed_tick > conn.signin_at)
            for other in conns
        )
        if alone:
            missing = sorted(s for s in seqs[conn.user_id] if s > (conn.base or 0) and s not in conn.received)
            if missing:
                verdict.add("online-complete", f"conn {conn.serial} of device {conn.device_id} (user {conn.user_id}) "
                            f"on {conn.node}, the device's only connection since it signed in and open at the end, "
                            f"never received {len(missing)} of its user's messages after seq {conn.base}: seqs "
                            f"{missing[:10]}{'...' if len(missing) > 10 else ''} (it got {conn.pushes} push frames)")
                continue
        mark = marks.get(conn.user_id)
        if mark is None:
            continue  # no sentinel stored (reported under health)
        if mark not in conn.received:
            verdict.add("online-complete", f"conn {conn.serial} of device {conn.device_id} (user {conn.user_id}) on "
                        f"{conn.node}, signed in and open at the end, never received the sentinel message "
                        f"(seq {mark}, sent after the faults): it got {conn.pushes} push frames and "
                        f"{len(conn.received)} messages since it signed in (after seq {conn.base})")
            continue
        missing = sorted(seqs[conn.user_id] - held)
        if missing:
            verdict.add("online-complete", f"device {conn.device_id} (user {conn.user_id}), online at the end on "
                        f"conn {conn.serial}, lacks {len(missing)} of its user's messages: seqs {missing[:10]}"
                        f"{'...' if len(missing) > 10 else ''}")


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}) ")


def _log_events(text: str, port: int) -> list[tuple[float, str]]:
    """(time, text with the following traceback) of the log lines naming 127.0.0.1:port."""
    needle = f"127.0.0.1:{port}"
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if needle not in line or not re.search(rf"{re.escape(needle)}(?!\d)", line):
            continue
        m = _STAMP.match(line)
        if not m:
            continue
        when = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S%z").timestamp()
        tail = [line]
        for follow in lines[i + 1 : i + 80]:
            if not follow.startswith("\t"):
                break  # twistd's text log indents the further lines of one record with a tab
            tail.append(follow)
        found.append((when, "\n".join(tail)))
    return found


#: causes of a close without Kicked that docs/protocol.md allows (§5: a send whose
#: outcome is unknown; §7: a failed sync read, and the client's own faults)
ALLOWED_CLOSES = ("failed: closing", "did not advance: closing", "close timed out", "outcome unknown")
#: allowed too, but they mean the soak's client misbehaved or the node stalled: noted
CLIENT_FAULT_CLOSES = ("frame rate limit exceeded", "before sign-in", "not signed in within", "idle for",
                      "malformed", "too long", "longer than", "has not read its data")


def check_sessions(history: History, logs: dict[str, str], verdict: Verdict) -> None:
    """session-lost: closes without Kicked need a documented cause."""
    kills = [f for f in history.faults if f.action == "kill"]
    for conn in history.conns:
        reasons = [r for r in conn.kicked if r != "server shutting down"]
        if reasons:
            later = [t for t in [*history.tcp_signins.get(conn.device_id, []),
                                 *history.http_signins.get(conn.device_id, [])] if t > conn.signin_at]
            if not later:
                verdict.add("session-lost", f"conn {conn.serial} of device {conn.device_id} (user {conn.user_id}) on "
                            f"{conn.node} got Kicked({reasons[0]!r}) although the device signed in nowhere else "
                            f"(TCP or HTTP) after it (stale kick)")
        if not conn.signed_in or conn.kicked or conn.closed_by_client or conn.closed_at is None:
            continue
        if any(f.target == conn.node and f.wall - 1.0 <= conn.closed_at <= (f.end_wall or f.wall) + 5.0 for f in kills):
            continue  # its node was killed
        replaced = [t for t in [*history.tcp_signins.get(conn.device_id, []), *history.http_signins.get(conn.device_id, [])]
                    if conn.signin_at < t < conn.closed_tick]
        if replaced:
            continue  # the device signed in again meanwhile: this session was being replaced
        events = [
            (when, text) for when, text in _log_events(logs.get(conn.node, ""), conn.local_port)
            if conn.opened_at - 2 <= when <= conn.closed_at + 5
        ]
        closing = [text for _, text in events if "clos" in text.split("\n")[0] or "abort" in text.split("\n")[0]]
        if any("not signed in through" in text for text in closing):
            verdict.add("session-lost", f"conn {conn.serial} of device {conn.device_id} (user {conn.user_id}) on "
                        f"{conn.node} was closed without a Kicked frame because logic no longer placed the device "
                        f"on that node: {_short(closing)}")
        elif any(cause in text.split("\n")[0] for text in closing for cause in ALLOWED_CLOSES):
            continue
        elif any(cause in text.split("\n")[0] for text in closing for cause in CLIENT_FAULT_CLOSES):
            history.notes.append(f"conn {conn.serial} closed by {conn.node} for a client fault: {_short(closing)}")
        elif closing:
            verdict.add("session-lost", f"conn {conn.serial} of device {conn.device_id} on {conn.node} closed "
                        f"without Kicked: {_short(closing)}")
        else:
            verdict.add("session-lost", f"conn {conn.serial} of device {conn.device_id} (user {conn.user_id}) on "
                        f"{conn.node} (local port {conn.local_port}) was closed by the server without a Kicked "
                        f"frame and without a logged cause, while its node was not killed")


def _short(texts: list[str]) -> str:
    text = texts[0]
    keep = [line for line in text.split("\n") if line.strip()]
    return " | ".join(keep[:2] + keep[-2:] if len(keep) > 4 else keep)[:600]
