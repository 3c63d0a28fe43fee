"""The envelope's API codes: named IntEnum members inside, plain numbers on the wire."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from goim.logic import errors
from goim.logic.codes import ApiCode
from goim.resources.envelope import envelope
from goim.resources.status import http_status


class ApiCodeTests(SynchronousTestCase):
    def test_envelope_json_carries_the_number(self) -> None:
        """An ApiCode in the envelope is written as its number, never its name."""
        request = DummyRequest([b""])
        body = json.loads(envelope(request, code=ApiCode.USER_NOT_FOUND, message="no such user", status=404))
        self.assertEqual(body, {"code": 1004, "message": "no such user", "data": None})
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(json.loads(envelope(DummyRequest([b""]), {"x": 1}))["code"], 0)

    def test_old_names_are_the_members(self) -> None:
        """errors.USER_NOT_FOUND and friends are ApiCode members equal to the old numbers."""
        self.assertIs(errors.USER_NOT_FOUND, ApiCode.USER_NOT_FOUND)
        self.assertEqual(errors.REGISTRATION_THROTTLED, 1013)
        error = errors.GoimError(errors.GROUP_FULL, "full")
        self.assertEqual((error.code, http_status(error)), (1008, 409))
        self.assertEqual(http_status(errors.GoimError(1008, "full")), 409)

    def test_codes_name_themselves_in_logs(self) -> None:
        """repr and describe name a code; str and format stay the number."""
        self.assertEqual(repr(ApiCode.TOKEN_EXPIRED), "ApiCode.TOKEN_EXPIRED(1014)")
        self.assertEqual(ApiCode.describe(1014), "1014 (TOKEN_EXPIRED)")
        self.assertEqual(ApiCode.describe(77), "77")
        self.assertEqual((str(ApiCode.BAD_REQUEST), f"{ApiCode.BAD_REQUEST}"), ("2", "2"))
