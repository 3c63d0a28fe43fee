"""The HTTP guards of a real ``twistd -n goim``: slow-loris deadline, per-address cap, body limit, backlog.

These are about sockets and timing, so they run against a real process on
127.0.0.1 (the attacker) and 127.0.0.2 (an ordinary client: another address on
the loopback interface).
"""

import shutil
import socket
import subprocess
import time

from twisted.trial.unittest import TestCase

from tests.support.db import SQLiteBackend
from tests.support.server import StandaloneServer, pause, server_database

HEADER_TIMEOUT = 2.0
PER_ADDRESS = 5


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(2.0)
    s.connect(("127.0.0.1", port))
    return s


def read_status(s: socket.socket) -> bytes:
    """The status line of whatever the server wrote (b"" when it closed without a word)."""
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data.split(b"\r\n", 1)[0]


def get_healthz(port: int, source: str) -> bytes:
    s = connect(port, source)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: goim\r\nConnection: close\r\n\r\n")
        return read_status(s)
    finally:
        s.close()


def closed(s: socket.socket) -> bool:
    """True once the server closed the connection (read what it sent, non-blocking)."""
    s.setblocking(False)
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.settimeout(2.0)


class HTTPGuardProcessTests(SQLiteBackend, TestCase):
    timeout = 120

    async def server(self) -> StandaloneServer:
        server = StandaloneServer(
            self,
            server_database(self),
            "--http-header-timeout",
            str(HEADER_TIMEOUT),
            "--http-max-connections-per-address",
            str(PER_ADDRESS),
            "--listen-backlog",
            "2000",
        )
        await server.start()
        self.addCleanup(server.kill)
        return server

    async def test_slow_loris_is_cut_off_and_others_are_served(self) -> None:
        """Trickled headers are cut at the total deadline; the address cap refuses more; another address is served."""
        server = await self.server()
        port = server.http_port
        attackers = [connect(port) for _ in range(PER_ADDRESS)]
        self.addCleanup(lambda: [s.close() for s in attackers])
        for s in attackers:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: goim\r\n")
        started = time.monotonic()
        await pause(0.3)
        extra = connect(port)
        self.assertEqual(read_status(extra), b"HTTP/1.1 503 Service Unavailable")
        extra.close()
        self.assertEqual(get_healthz(port, "127.0.0.2"), b"HTTP/1.1 200 OK")
        # keep trickling: every byte would have reset the old idle timeout
        cut_at = None
        while time.monotonic() - started < HEADER_TIMEOUT + 10:  # slack for a loaded machine
            alive = [s for s in attackers if not closed(s)]
            if not alive:
                cut_at = time.monotonic() - started
                break
            for s in alive:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            await pause(0.25)
        self.assertIsNotNone(cut_at, "slow-loris connections were not cut off")
        assert cut_at is not None
        self.assertGreaterEqual(cut_at, HEADER_TIMEOUT - 0.5)
        self.assertEqual(get_healthz(port, "127.0.0.1"), b"HTTP/1.1 200 OK")
        self.assertIn("headers deadline", server.log_text())

    async def test_oversized_body_is_refused_before_it_is_sent(self) -> None:
        """A 300 MB Content-Length is answered 413 right after the headers, the body never read."""
        server = await self.server()
        s = connect(server.http_port)
        self.addCleanup(s.close)
        s.sendall(b"POST /device HTTP/1.1\r\nHost: goim\r\nContent-Length: 300000000\r\n\r\n" + b"x" * 1000)
        self.assertEqual(read_status(s), b"HTTP/1.1 413 Payload Too Large")

    async def test_listen_backlog_applies_to_every_listener(self) -> None:
        """--listen-backlog reaches the kernel for the HTTP and client TCP listeners (ss shows it as Send-Q)."""
        if shutil.which("ss") is None:
            self.skipTest("needs ss (iproute2)")
        server = await self.server()
        somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
        for port in (server.http_port, server.tcp_port):
            out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
            self.assertEqual(int(out.split()[2]), min(2000, somaxconn), out)


class TokenLifecycleProcessTests(SQLiteBackend, TestCase):
    timeout = 120

    async def test_sign_out_and_device_deletion_end_the_tcp_connection(self) -> None:
        """POST /user/signout and DELETE /device/{id} kick the device's TCP connection; its token no longer signs in."""
        from tests.e2e.httpapi import PASSWORD, HttpApi
        from tests.e2e.wire import connect as wire_connect

        server = StandaloneServer(self, server_database(self))
        await server.start()
        self.addCleanup(server.kill)
        api = HttpApi(server.http)
        alice = await api.new_user("alice")
        phone = await api.new_device()
        await api.ok("POST", "/user/signin", {"number": "alice", "password": PASSWORD}, auth=phone)

        first = await wire_connect(self, server.tcp_port)
        await first.sign_in(alice.device_id, alice.user_id, alice.token)
        second = await wire_connect(self, server.tcp_port)
        await second.sign_in(phone[0], alice.user_id, phone[1])

        await api.ok("DELETE", f"/device/{phone[0]}", auth=alice.auth)
        await second.wait_closed()
        self.assertEqual([k.reason for k in second.kicks()], ["device deleted"])

        await api.ok("POST", "/user/signout", auth=alice.auth)
        await first.wait_closed()
        self.assertEqual([k.reason for k in first.kicks()], ["signed out"])

        again = await wire_connect(self, server.tcp_port)
        ack = await again.sign_in(alice.device_id, alice.user_id, alice.token, expect_ok=False)
        self.assertNotEqual(ack.code, 1)
