"""A schema-driven fuzz of every route of the OpenAPI document: never a 5xx, never a traceback.

Requests are built from ``openapi_document()``: each operation's body schema gives
well-typed values, and every value may instead be of the wrong type, a lone UTF-16
surrogate, deeply nested JSON, a huge number or raw garbage bytes; path and query
parameters get numbers in and out of range and arbitrary text; credentials are a
signed-in user's, an unbound device's, wrong or missing. The API runs in memory
(StubTreq) on a synchronous SQLite database.
"""

import json
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from goim.resources.api import GoimAPI
from goim.resources.openapi import openapi_document
from tests.support.db import SQLiteBackend
from tests.support.services import Services

SURROGATES = ["\ud800", "a\udfffb", "\udc00\ud800", "x" * 10 + "\udbff"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def wrong(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``value`` most of the time, otherwise anything at all."""
    return st.one_of(value, value, json_values, st.sampled_from(SURROGATES))


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for a JSON schema of the document, with wrong ones mixed in."""
    kind = schema.get("type")
    if kind == "object":
        properties = {name: from_schema(s) for name, s in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        return wrong(
            st.fixed_dictionaries(
                {k: v for k, v in properties.items() if k in required},
                optional={k: v for k, v in properties.items() if k not in required},
            )
        )
    if kind == "array":
        return wrong(st.lists(from_schema(schema.get("items", {})), max_size=6))
    if kind == "integer":
        return wrong(st.integers(min_value=-(2**70), max_value=2**70) | st.integers(min_value=-3, max_value=50))
    if kind == "string":
        return wrong(st.text(max_size=80) | st.sampled_from(SURROGATES))
    return json_values


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


#: named, so that a failing example's repr stays short
RAW_BODIES = {
    "100k [": b"[" * 100_000,
    "nested 20": nested(20),
    "nested 5000": nested(5000),
    "not UTF-8": b"\xff\xfe\x00",
    "surrogate value": b'{"brand": "\\ud800", "name": "\\ud800", "label": "\\ud800"}',
    "surrogate key": b'{"\\udc00": 1}',
    "surrogate credentials": b'{"number": "\\ud83d", "password": "\\ud83dsecret"}',
    "huge float": b'{"type": 1e999999, "group_id": 1e999999}',
    "5000 digits": b'{"type": ' + b"9" * 5000 + b"}",
    "NaN": b'{"type": NaN, "user_ids": [Infinity]}',
    "null": b"null",
    "string": b'"just a string"',
}


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    document = openapi_document()
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


@st.composite
def requests(draw: Any) -> tuple[str, str, bytes | None, str]:
    """``(method, url, body, auth kind)`` for one operation of the document."""
    method, path, op = draw(st.sampled_from(operations()))
    for parameter in op.get("parameters", []):
        if parameter["in"] == "path":
            value = draw(st.integers(min_value=-(2**70), max_value=2**70) | st.integers(1, 5) | st.text(max_size=10))
            path = path.replace("{" + parameter["name"] + "}", quote(str(value), safe=""))
    query = []
    for parameter in op.get("parameters", []):
        if parameter["in"] == "query":
            value = draw(st.none() | st.text(max_size=12) | st.integers(min_value=-(2**70), max_value=2**70).map(str))
            if value is not None:
                query.append(f"{parameter['name']}={quote(value, safe='')}")
    url = "http://goim.test" + path + ("?" + "&".join(query) if query else "")
    body: bytes | None = None
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    choice = draw(st.integers(0, 9))
    if choice == 0:
        body = RAW_BODIES[draw(st.sampled_from(sorted(RAW_BODIES)))]
    elif choice == 1:
        body = draw(st.binary(max_size=64))
    elif schema is not None or choice == 2:
        value = draw(from_schema(schema or {"type": "object"}))
        body = json.dumps(value).encode()  # ensure_ascii: surrogates travel as \\udXXX escapes
    auth = draw(st.sampled_from(["user", "user", "device", "wrong", "none", "garbage"]))
    return method.upper(), url, body, auth


class FuzzTests(SQLiteBackend, SynchronousTestCase):
    def setUp(self) -> None:
        self.services = Services(self.make_sync_database(), reactor, synchronous=True)
        self.api = GoimAPI(self.services.accounts, self.services.social, health=lambda: {"mode": "test"})
        self.stub = StubTreq(self.api.app.resource())
        self.failures: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if "log_failure" in event:
                self.failures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.user_auth = self._signed_in_user()
        self.device_auth = self._device()

    def _device(self) -> tuple[int, str]:
        d = self.successResultOf(
            self.stub.post(
                "http://goim.test/device",
                data=json.dumps({"type": 1, "brand": "b", "model": "m", "system_version": "1", "app_version": "1"}).encode(),
            )
        )
        data = json.loads(self.successResultOf(d.content()))["data"]
        return data["id"], data["token"]

    def _signed_in_user(self) -> tuple[int, str]:
        auth = self._device()
        headers = {b"device_id": [str(auth[0]).encode()], b"token": [auth[1].encode()]}
        body = json.dumps({"number": "fuzzer", "nickname": "F", "password": "secret-pw"}).encode()
        response = self.successResultOf(self.stub.post("http://goim.test/user", data=body, headers=headers))
        self.assertEqual(response.code, 200)
        group = json.dumps({"name": "g", "user_ids": []}).encode()
        self.successResultOf(self.stub.post("http://goim.test/group", data=group, headers=headers))
        return auth

    def headers(self, auth: str) -> dict[bytes, list[bytes]]:
        if auth == "none":
            return {}
        if auth == "garbage":
            # (a NUL in a header is refused by Twisted's parser before any route runs)
            return {b"device_id": [b"\xff\xfe1"], b"token": [b"\xff\x01"]}
        device_id, token = {"user": self.user_auth, "device": self.device_auth}.get(auth, (self.user_auth[0], "wrong"))
        return {b"device_id": [str(device_id).encode()], b"token": [token.encode()]}

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(requests())
    def test_no_route_answers_5xx_or_logs_a_traceback(self, request: tuple[str, str, bytes | None, str]) -> None:
        """Any request built from the OpenAPI document gets a 2xx/4xx JSON envelope and logs no traceback."""
        method, url, body, auth = request
        note = (method, url, body if body is None or len(body) < 200 else body[:60] + b"...", auth)
        response = self.successResultOf(self.stub.request(method, url, data=body, headers=self.headers(auth)))
        content = self.successResultOf(response.content())
        self.assertLess(response.code, 500, (note, content[:300]))
        if not url.startswith("http://goim.test/metrics"):
            envelope = json.loads(content) if content[:1] == b"{" else self.fail(f"not an envelope: {note} {content[:200]!r}")
            self.assertEqual(set(envelope), {"code", "message", "data"})
            self.assertEqual(envelope["code"] == 0, response.code == 200, content[:300])
        self.assertEqual(self.failures, [], note)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_every_operation_is_fuzzed(self) -> None:
        """The fuzz draws from every operation of the document (nothing silently left out)."""
        self.assertGreaterEqual(len(operations()), 20)
