"""The device state: JSON round trip, atomic writes, epochs, the profile lock."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from goim.client.errors import ProfileLocked, StateError
from goim.client.state import ClientState, JSONStateStore, MemoryStateStore, OutgoingMessage, ProfileLock


def outgoing(seq: int, content: str = "hi") -> OutgoingMessage:
    return OutgoingMessage(send_sequence=seq, receiver_type=1, receiver_id=7, type=1, content=content, send_time=1000 + seq)


def full_state() -> ClientState:
    return ClientState(
        device_id=5,
        token="secret-token",
        user_id=3,
        send_sequence=9,
        synced_seq=41,
        pending=[outgoing(8, "ünïcode ✓"), outgoing(9)],
    )


class JSONStateStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.path = self.dir / "profile" / "state.json"
        self.store = JSONStateStore(self.path)

    def test_missing_file_loads_a_fresh_state(self) -> None:
        """Without a file, load() gives an empty state (no device, nothing synced)."""
        self.assertEqual(self.store.load(), ClientState())

    def test_save_then_load_round_trips_every_field(self) -> None:
        """A saved state, pending sends included, reloads equal in a new store object."""
        self.store.save(full_state())
        self.assertEqual(JSONStateStore(self.path).load(), full_state())

    def test_file_and_directory_are_private(self) -> None:
        """The state holds the device token: file 0600, directory 0700."""
        self.store.save(full_state())
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.path.parent).st_mode), 0o700)

    def test_save_replaces_the_file_and_leaves_no_temporary(self) -> None:
        """A second save replaces the first; only state.json remains in the directory."""
        self.store.save(full_state())
        changed = full_state()
        changed.synced_seq = 99
        changed.pending = []
        self.store.save(changed)
        self.assertEqual(self.store.load(), changed)
        self.assertEqual(os.listdir(self.path.parent), ["state.json"])

    def test_leftover_temporary_from_a_crash_is_ignored_and_overwritten(self) -> None:
        """A half-written temporary (crash before the rename) never replaces the good file."""
        self.store.save(full_state())
        temporary = self.path.parent / f".state.json.{os.getpid()}.tmp"
        temporary.write_text('{"version": 1, "device_id": ')
        self.assertEqual(self.store.load(), full_state())
        self.store.save(ClientState(device_id=1, token="t"))
        self.assertFalse(temporary.exists())
        self.assertEqual(self.store.load().device_id, 1)

    def test_failed_save_keeps_nothing_half_done(self) -> None:
        """When the rename fails the temporary file is removed and the error raised."""
        self.path.mkdir(parents=True)  # a directory where the file should be: os.replace fails
        with self.assertRaises(OSError):
            self.store.save(full_state())
        self.assertEqual(sorted(os.listdir(self.path.parent)), ["state.json"])
        self.assertTrue(self.path.is_dir())

    def test_corrupt_file_raises_state_error(self) -> None:
        """Invalid JSON, a non-object, an unknown version or a bad field raise StateError."""
        self.path.parent.mkdir(parents=True)
        for text in ("{not json", "[]", '{"version": 2}', '{"version": 1, "device_id": "7"}', '{"version": 1, "pending": [{}]}'):
            self.path.write_text(text)
            with self.assertRaises(StateError, msg=text):
                self.store.load()

    def test_file_is_plain_json(self) -> None:
        """The file is readable JSON with the documented field names."""
        self.store.save(full_state())
        data = json.loads(self.path.read_text())
        self.assertEqual(
            sorted(data), ["device_id", "pending", "send_sequence", "synced_seq", "token", "user_id", "version"]
        )
        self.assertEqual(data["pending"][1]["send_sequence"], 9)


class MemoryStateStoreTests(SynchronousTestCase):
    def test_load_returns_a_copy_of_the_last_save(self) -> None:
        """Changing the loaded state does not change what is stored; saves are counted."""
        store = MemoryStateStore()
        store.save(full_state())
        loaded = store.load()
        loaded.synced_seq = 0
        self.assertEqual(store.load().synced_seq, 41)
        self.assertEqual(store.saves, 1)


class EpochTests(SynchronousTestCase):
    def test_same_user_renumbers_pending_sends_and_keeps_synced_seq(self) -> None:
        """Signing in the same user again: counter from 0, pending renumbered 1.., seq kept."""
        state = full_state()
        dropped = state.start_epoch(user_id=3, send_sequence=0, sync_sequence=10)
        self.assertEqual(dropped, [])
        self.assertEqual([m.send_sequence for m in state.pending], [1, 2])
        self.assertEqual([m.content for m in state.pending], ["ünïcode ✓", "hi"])
        self.assertEqual(state.send_sequence, 2)
        self.assertEqual(state.synced_seq, 41)

    def test_other_user_drops_pending_and_takes_server_sync_sequence(self) -> None:
        """Signing in another user: the old user's unsent messages are dropped, seq from the server."""
        state = full_state()
        dropped = state.start_epoch(user_id=4, send_sequence=0, sync_sequence=10)
        self.assertEqual([m.send_sequence for m in dropped], [8, 9])
        self.assertEqual((state.user_id, state.send_sequence, state.synced_seq, state.pending), (4, 0, 10, []))

    def test_new_device_unbinds_and_resets(self) -> None:
        """A new device starts unbound with empty sequences."""
        state = full_state()
        dropped = state.set_device(6, "new")
        self.assertEqual(len(dropped), 2)
        self.assertEqual(state, ClientState(device_id=6, token="new"))
        self.assertFalse(state.signed_in)
        self.assertTrue(state.has_device)


class ProfileLockTests(SynchronousTestCase):
    def test_second_holder_is_refused_until_release(self) -> None:
        """Two locks on one profile: the second fails with ProfileLocked until the first releases."""
        path = Path(self.mktemp()) / "lock"
        first, second = ProfileLock(path), ProfileLock(path)
        first.acquire()
        self.addCleanup(first.release)
        self.assertRaises(ProfileLocked, second.acquire)
        first.release()
        second.acquire()
        second.release()
