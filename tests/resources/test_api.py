"""The HTTP API through StubTreq (real Site and Agent, no sockets) on a synchronous SQLite database."""

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase

from goim.resources.api import GoimAPI
from goim.resources.openapi import openapi_document
from goim.resources.push import PushAPI
from tests.support.db import SQLiteBackend
from tests.support.services import Services

DEVICE = {"type": 1, "brand": "acme", "model": "phone", "system_version": "14", "app_version": "1.0"}


class APITestCase(SQLiteBackend, SynchronousTestCase):
    """Builds the API on fresh services; helpers return ``(status, envelope)``."""

    def setUp(self) -> None:
        self.services = Services(self.make_sync_database(), reactor, synchronous=True)
        self.api = GoimAPI(self.services.accounts, self.services.social, health=lambda: {"mode": "test"})
        self.stub = StubTreq(self.api.app.resource())

    def call(
        self, method: str, path: str, body: Any = None, *, auth: tuple[int, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {}
        if auth is not None:
            headers = {b"device_id": [str(auth[0]).encode()], b"token": [auth[1].encode()]}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = self.successResultOf(
            self.stub.request(method, "http://goim.test" + path, headers=headers, data=data)
        )
        content = self.successResultOf(response.content())
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"])
        return response.code, json.loads(content)

    def device(self) -> tuple[int, str]:
        status, env = self.call("POST", "/device", DEVICE)
        self.assertEqual((status, env["code"]), (200, 0))
        return env["data"]["id"], env["data"]["token"]

    def user(self, number: str) -> tuple[int, tuple[int, str]]:
        auth = self.device()
        status, env = self.call(
            "POST", "/user", {"number": number, "nickname": number.upper(), "password": "secret-pw"}, auth=auth
        )
        self.assertEqual((status, env["code"]), (200, 0), env)
        return env["data"]["user_id"], auth


class DeviceAndUserTests(APITestCase):
    def test_register_device_returns_id_and_token(self) -> None:
        """POST /device answers {id, token} in the envelope."""
        device_id, token = self.device()
        self.assertGreater(device_id, 0)
        self.assertGreaterEqual(len(token), 22)

    def test_register_and_sign_in(self) -> None:
        """POST /user then /user/signin on a second device return user id and sequences."""
        user_id, _ = self.user("alice")
        other = self.device()
        status, env = self.call("POST", "/user/signin", {"number": "alice", "password": "secret-pw"}, auth=other)
        self.assertEqual(status, 200)
        self.assertEqual(env["data"], {"user_id": user_id, "send_sequence": 0, "sync_sequence": 0})
        status, env = self.call("GET", "/user/info", auth=other)
        self.assertEqual(env["data"]["number"], "alice")
        status, env = self.call("POST", "/user/info", auth=other)
        self.assertEqual((status, env["data"]["id"]), (200, user_id))

    def test_error_codes_and_statuses(self) -> None:
        """Each service error maps to its code and HTTP status."""
        self.user("alice")
        auth = self.device()
        cases = [
            (("POST", "/user", {"number": "alice", "nickname": "x", "password": "secret-pw"}), (409, 1002)),
            (("POST", "/user/signin", {"number": "alice", "password": "wrong-pw"}), (401, 1003)),
            (("GET", "/user/info", None), (403, 4)),
        ]
        for (method, path, body), expected in cases:
            status, env = self.call(method, path, body, auth=auth)
            self.assertEqual((status, env["code"]), expected, path)
            self.assertIsNone(env["data"])

    def test_missing_or_wrong_credentials(self) -> None:
        """No headers → 401 code 1; a wrong token → 401 code 1001; a malformed device_id → 401 code 1."""
        device_id, _ = self.device()
        self.assertEqual(self._status_code("GET", "/friend/all", None), (401, 1))
        self.assertEqual(self._status_code("GET", "/friend/all", (device_id, "nope")), (401, 1001))
        status, env = self.call("GET", "/friend/all", auth=(999999, "nope"))
        self.assertEqual((status, env["code"]), (401, 1001))

    def _status_code(self, method: str, path: str, auth: tuple[int, str] | None) -> tuple[int, int]:
        status, env = self.call(method, path, auth=auth)
        return status, env["code"]

    def test_bad_input_is_400_code_2(self) -> None:
        """Malformed JSON, non-objects, wrong types, missing fields, long strings, huge bodies → 400 code 2."""
        bad = [
            b"{not json",
            b"[1, 2]",
            b"",
            json.dumps({**DEVICE, "type": "1"}).encode(),
            json.dumps({**DEVICE, "type": True}).encode(),
            json.dumps({**DEVICE, "type": 9}).encode(),
            json.dumps({k: v for k, v in DEVICE.items() if k != "brand"}).encode(),
            json.dumps({**DEVICE, "brand": "x" * 65}).encode(),
            json.dumps({**DEVICE, "model": "x" * 70000}).encode(),
            b"\xff\xfe",
        ]
        for raw in bad:
            status, env = self.call("POST", "/device", raw=raw)
            self.assertEqual((status, env["code"]), (400, 2), raw[:40])
            self.assertTrue(env["message"])


class FriendAndGroupTests(APITestCase):
    def test_friends(self) -> None:
        """POST /friend is mutual, GET /friend/all lists profiles, DELETE removes both ways."""
        alice, alice_auth = self.user("alice")
        bob, bob_auth = self.user("bob")
        status, env = self.call("POST", "/friend", {"friend_id": bob, "label": "bobby"}, auth=alice_auth)
        self.assertEqual((status, env["code"]), (200, 0))
        _, env = self.call("GET", "/friend/all", auth=alice_auth)
        self.assertEqual(
            env["data"],
            [{"user_id": bob, "label": "bobby", "number": "bob", "nickname": "BOB", "sex": 0, "avatar": ""}],
        )
        _, env = self.call("GET", "/friend/all", auth=bob_auth)
        self.assertEqual([f["user_id"] for f in env["data"]], [alice])
        status, env = self.call("DELETE", f"/friend/{alice}", auth=bob_auth)
        self.assertEqual(status, 200)
        _, env = self.call("GET", "/friend/all", auth=alice_auth)
        self.assertEqual(env["data"], [])
        status, env = self.call("POST", "/friend", {"friend_id": 987654}, auth=alice_auth)
        self.assertEqual((status, env["code"]), (404, 1004))
        status, env = self.call("DELETE", "/friend/0", auth=alice_auth)
        self.assertEqual((status, env["code"]), (400, 2))

    def test_groups(self) -> None:
        """Create, list, get, add, label and remove through the group routes, with 1005/1006/1007."""
        alice, alice_auth = self.user("alice")
        bob, bob_auth = self.user("bob")
        carol, carol_auth = self.user("carol")
        status, env = self.call("POST", "/group", {"name": "team", "user_ids": [bob]}, auth=alice_auth)
        self.assertEqual(status, 200)
        group_id = env["data"]["id"]
        _, env = self.call("GET", f"/group/one/{group_id}", auth=bob_auth)
        self.assertEqual((env["data"]["name"], env["data"]["owner_id"]), ("team", alice))
        self.assertEqual([u["user_id"] for u in env["data"]["users"]], sorted([alice, bob]))
        self.assertEqual(self._code("GET", f"/group/one/{group_id}", None, carol_auth), (403, 1006))
        self.assertEqual(self._code("GET", "/group/one/424242", None, carol_auth), (404, 1005))
        self.assertEqual(self._code("POST", "/group/user", {"group_id": group_id, "user_ids": [carol]}, bob_auth), (200, 0))
        self.assertEqual(
            self._code("DELETE", "/group/user", {"group_id": group_id, "user_ids": [carol]}, bob_auth), (403, 1007)
        )
        self.assertEqual(self._code("PUT", "/group/user/label", {"group_id": group_id, "label": "c"}, carol_auth), (200, 0))
        _, env = self.call("GET", "/group/all", auth=carol_auth)
        [group] = env["data"]
        self.assertIn({"user_id": carol, "label": "c", "number": "carol", "nickname": "CAROL", "sex": 0, "avatar": ""}, group["users"])
        self.assertEqual(
            self._code("DELETE", "/group/user", {"group_id": group_id, "user_ids": [carol]}, carol_auth), (200, 0)
        )
        self.assertEqual(self._code("POST", "/group/user", {"group_id": group_id, "user_ids": []}, alice_auth), (400, 2))
        self.assertEqual(self._code("POST", "/group/user", {"group_id": group_id, "user_ids": [-1]}, alice_auth), (400, 2))

    def _code(self, method: str, path: str, body: Any, auth: tuple[int, str]) -> tuple[int, int]:
        status, env = self.call(method, path, body, auth=auth)
        return status, env["code"]


class ErrorEnvelopeTests(APITestCase):
    def test_unknown_path_is_a_404_envelope(self) -> None:
        """An unknown path answers 404 with the envelope."""
        status, env = self.call("GET", "/nope")
        self.assertEqual((status, env["code"], env["message"]), (404, 2, "not found"))

    def test_wrong_method_is_a_405_envelope(self) -> None:
        """A known path with the wrong method answers 405 with the envelope."""
        status, env = self.call("GET", "/device")
        self.assertEqual((status, env["code"]), (405, 2))

    def test_unhandled_exception_is_a_500_envelope(self) -> None:
        """An exception in a service answers 500 code 3, logs the traceback and shows no stack trace."""

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise ZeroDivisionError("secret detail")

        self.services.accounts.register_device = broken  # type: ignore[method-assign]
        status, env = self.call("POST", "/device", DEVICE)
        self.assertEqual((status, env["code"], env["message"]), (500, 3, "internal error"))
        self.assertNotIn("secret", json.dumps(env))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_healthz(self) -> None:
        """GET /healthz answers the envelope with the health details."""
        status, env = self.call("GET", "/healthz")
        self.assertEqual((status, env["data"]), (200, {"mode": "test"}))


class OpenAPITests(APITestCase):
    def test_document_matches_the_routes(self) -> None:
        """Every Klein route is documented in /openapi.json and every documented operation is routed."""
        routed = set()
        for rule in self.api.app.url_map.iter_rules():
            path = rule.rule.replace("<int(signed=True):", "{").replace(">", "}")
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    routed.add((method.lower(), path))
        # the business push routes, mounted under /push/ (goim.resources.push)
        for rule in PushAPI.app.url_map.iter_rules():
            path = "/push" + rule.rule.replace("<int(signed=True):", "{").replace(">", "}")
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    routed.add((method.lower(), path))
        status, env = self.call("GET", "/openapi.json")
        self.assertEqual(status, 200)
        documented = {(m, p) for p, ops in env["data"]["paths"].items() for m in ops}
        self.assertEqual(documented, routed)
        self.assertEqual(env["data"], json.loads(json.dumps(openapi_document())))
        self.assertEqual(env["data"]["openapi"], "3.0.3")


class OpsAPITests(SynchronousTestCase):
    def test_healthz_metrics_and_unknown_paths(self) -> None:
        """OpsAPI serves /healthz as an envelope, /metrics as Prometheus text, and 404 envelopes otherwise."""
        from goim.metrics import Metrics
        from goim.resources.ops import OpsAPI

        metrics = Metrics()
        metrics.track_connections(lambda: 7)
        stub = StubTreq(OpsAPI(health=lambda: {"mode": "connect"}, metrics=metrics.render).app.resource())
        response = self.successResultOf(stub.get("http://goim.test/healthz"))
        self.assertEqual(json.loads(self.successResultOf(response.content()))["data"], {"mode": "connect"})
        response = self.successResultOf(stub.get("http://goim.test/metrics"))
        self.assertIn(b"goim_connections 7.0", self.successResultOf(response.content()))
        response = self.successResultOf(stub.get("http://goim.test/user/info"))
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(self.successResultOf(response.content()))["code"], 2)


class InputHygieneTests(APITestCase):
    def test_lone_surrogates_are_400_in_every_text_field(self) -> None:
        """A JSON-escaped lone surrogate in any text field or key is 400 code 2, never 500, and nothing is stored."""
        _, auth = self.user("alice")
        cases = [
            ("POST", "/device", {**DEVICE, "brand": "\ud800"}, None),
            ("POST", "/device", {**DEVICE, "\udc00": 1}, None),
            ("POST", "/user", {"number": "x\udfff", "nickname": "n", "password": "secret-pw"}, auth),
            ("POST", "/user", {"number": "carol", "nickname": "\ud83d", "password": "secret-pw"}, auth),
            ("POST", "/user/signin", {"number": "alice", "password": "\ud800secret"}, auth),
            ("POST", "/group", {"name": "\udbff team"}, auth),
            ("POST", "/friend", {"friend_id": 1, "label": "\udc00"}, auth),
            ("PUT", "/group/user/label", {"group_id": 1, "label": "\ud800"}, auth),
        ]
        for method, path, body, who in cases:
            raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as \udXXX
            status, env = self.call(method, path, raw=raw, auth=who)
            self.assertEqual((status, env["code"]), (400, 2), path)
            self.assertIn("Unicode", env["message"])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_deep_nesting_is_400(self) -> None:
        """Nesting past 16 levels, or deep enough to exhaust the parser, is 400 code 2."""
        for raw in (b"[" * 100_000, b'{"a":' * 17 + b"1" + b"}" * 17, b'{"a":' * 5000 + b"1" + b"}" * 5000):
            status, env = self.call("POST", "/device", raw=raw)
            self.assertEqual((status, env["code"]), (400, 2))
        status, env = self.call("POST", "/device", raw=json.dumps({**DEVICE, "x": [[[[1]]]]}).encode())
        self.assertEqual(status, 200)

    def test_bad_query_parameters_are_400(self) -> None:
        """A cursor or limit that is not a page parameter is 400 code 2."""
        _, auth = self.user("alice")
        for query in ("cursor=abc", "cursor=-1", "cursor=99999999999999999999", "limit=0", "limit=1001", "limit=x"):
            status, env = self.call("GET", "/friend/all?" + query, auth=auth)
            self.assertEqual((status, env["code"]), (400, 2), query)


class PageTests(APITestCase):
    def raw_call(self, path: str, auth: tuple[int, str]) -> tuple[Any, dict[str, Any]]:
        headers = {b"device_id": [str(auth[0]).encode()], b"token": [auth[1].encode()]}
        response = self.successResultOf(self.stub.get("http://goim.test" + path, headers=headers))
        return response, json.loads(self.successResultOf(response.content()))

    def test_friend_pages_keep_the_goim_1_1_shape_without_a_cursor(self) -> None:
        """Without cursor: a plain list plus Goim-Next-Cursor; with cursor: {items, next_cursor}, page by page."""
        alice, auth = self.user("alice")
        friends = [self.user(f"f{i}")[0] for i in range(5)]
        for f in friends:
            self.call("POST", "/friend", {"friend_id": f}, auth=auth)
        response, env = self.raw_call("/friend/all?limit=2", auth)
        self.assertEqual([c["user_id"] for c in env["data"]], friends[:2])
        self.assertEqual(response.headers.getRawHeaders(b"goim-next-cursor"), [str(friends[1]).encode()])
        response, env = self.raw_call("/friend/all", auth)
        self.assertEqual([c["user_id"] for c in env["data"]], friends)
        self.assertIsNone(response.headers.getRawHeaders(b"goim-next-cursor"))
        seen, cursor = [], ""
        while cursor is not None:
            _, env = self.raw_call(f"/friend/all?cursor={cursor}&limit=2", auth)
            seen += [c["user_id"] for c in env["data"]["items"]]
            cursor = env["data"]["next_cursor"]
        self.assertEqual(seen, friends)

    def test_group_routes_page_members(self) -> None:
        """Groups carry member_count and members_next_cursor; GET /group/members pages the rest."""
        from goim.logic import social

        alice, auth = self.user("alice")
        others = [self.user(f"m{i}")[0] for i in range(3)]
        _, env = self.call("POST", "/group", {"name": "team", "user_ids": others}, auth=auth)
        group_id = env["data"]["id"]
        self.patch(social, "MEMBER_PAGE", 2)
        _, env = self.call("GET", "/group/all", auth=auth)
        [group] = env["data"]
        self.assertEqual((len(group["users"]), group["member_count"]), (2, 4))
        cursor = group["members_next_cursor"]
        _, env = self.call("GET", f"/group/members/{group_id}?cursor={cursor}", auth=auth)
        self.assertEqual([u["user_id"] for u in env["data"]["items"]], others[1:])
        self.assertIsNone(env["data"]["next_cursor"])
        _, env = self.call("GET", f"/group/one/{group_id}", auth=auth)
        self.assertEqual(env["data"]["members_next_cursor"], cursor)

    def test_numbers_are_hidden_from_co_members(self) -> None:
        """A group member who is not a friend sees "" as a co-member's number; a friend sees it."""
        alice, alice_auth = self.user("alice")
        bob, bob_auth = self.user("bob")
        carol, carol_auth = self.user("carol")
        _, env = self.call("POST", "/group", {"name": "team", "user_ids": [bob, carol]}, auth=alice_auth)
        group_id = env["data"]["id"]
        self.call("POST", "/friend", {"friend_id": bob}, auth=alice_auth)
        _, env = self.call("GET", f"/group/one/{group_id}", auth=carol_auth)
        self.assertEqual({u["user_id"]: u["number"] for u in env["data"]["users"]}, {alice: "", bob: "", carol: "carol"})
        _, env = self.call("GET", f"/group/one/{group_id}", auth=bob_auth)
        self.assertEqual({u["user_id"]: u["number"] for u in env["data"]["users"]}, {alice: "alice", bob: "bob", carol: ""})


class ThrottleAndTokenRouteTests(APITestCase):
    def test_throttled_sign_in_is_429_with_retry_after(self) -> None:
        """After the free failures a sign-in is 429 code 1012 with a Retry-After header."""
        self.user("alice")
        auth = self.device()
        headers = {b"device_id": [str(auth[0]).encode()], b"token": [auth[1].encode()]}
        body = json.dumps({"number": "alice", "password": "wrong-pw"}).encode()
        codes = []
        for _ in range(7):
            response = self.successResultOf(self.stub.post("http://goim.test/user/signin", data=body, headers=headers))
            codes.append(json.loads(self.successResultOf(response.content()))["code"])
        self.assertEqual(codes, [1003] * 6 + [1012])
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])

    def test_sign_out_devices_and_token_refresh(self) -> None:
        """POST /user/signout revokes the token; GET /device/all lists; DELETE /device/{id}; POST /device/token rotates."""
        alice, auth = self.user("alice")
        second = self.device()
        self.assertEqual(self._code("POST", "/user/signin", {"number": "alice", "password": "secret-pw"}, second), (200, 0))
        _, env = self.call("GET", "/device/all", auth=auth)
        self.assertEqual([(d["id"], d["current"]) for d in env["data"]], [(auth[0], True), (second[0], False)])
        status, env = self.call("POST", "/device/token", auth=second)
        self.assertEqual(status, 200)
        renewed = (second[0], env["data"]["token"])
        self.assertEqual(env["data"]["expires_at"], 0)
        self.assertEqual(self._code("GET", "/user/info", None, second), (401, 1001))
        self.assertEqual(self._code("GET", "/user/info", None, renewed), (200, 0))
        self.assertEqual(self._code("DELETE", f"/device/{renewed[0]}", None, auth), (200, 0))
        self.assertEqual(self._code("GET", "/user/info", None, renewed), (401, 1001))
        self.assertEqual(self._code("DELETE", f"/device/{renewed[0]}", None, auth), (404, 1015))
        self.assertEqual(self._code("POST", "/user/signout", None, auth), (200, 0))
        self.assertEqual(self._code("GET", "/user/info", None, auth), (401, 1001))

    def test_limit_codes_over_http(self) -> None:
        """A group over the size limit is 409 code 1008 (the limit's code and status reach the client)."""
        from goim.logic.social import SocialLimits, SocialService

        self.api.social = SocialService(
            self.services.account_store, self.services.social_store, reactor, limits=SocialLimits(group_size=2)
        )
        _, auth = self.user("alice")
        bob, _ = self.user("bob")
        carol, _ = self.user("carol")
        self.assertEqual(self._code("POST", "/group", {"name": "t", "user_ids": [bob, carol]}, auth), (409, 1008))

    def _code(self, method: str, path: str, body: Any, auth: tuple[int, str]) -> tuple[int, int]:
        status, env = self.call(method, path, body, auth=auth)
        return status, env["code"]
