"""goim.resources.status: the HTTP status of each service error code."""

from twisted.trial.unittest import SynchronousTestCase

from goim.logic import errors
from goim.resources.status import _STATUS, http_status, status_of


class StatusTests(SynchronousTestCase):
    def test_every_error_code_has_a_status(self) -> None:
        """Each non-zero code of goim/logic/errors.py has an entry in the table (none falls back silently)."""
        codes = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, int)} - {errors.OK}
        self.assertEqual(set(_STATUS), codes)

    def test_statuses(self) -> None:
        """Code 0 is 200; a few codes and their statuses; an unknown code is a 400."""
        self.assertEqual(status_of(errors.OK), 200)
        self.assertEqual(http_status(errors.GoimError(errors.WRONG_DEVICE_OR_TOKEN, "x")), 401)
        self.assertEqual(http_status(errors.GoimError(errors.DEVICE_NOT_BOUND, "x")), 403)
        self.assertEqual(http_status(errors.GoimError(errors.SIGN_IN_THROTTLED, "x")), 429)
        self.assertEqual(http_status(errors.GoimError(errors.INTERNAL, "x")), 500)
        self.assertEqual(status_of(99999), 400)
