"""Errors the services raise, with the API codes of DESIGN section 4.

The HTTP status of each code belongs to the resources layer (goim/resources/status.py).
"""

OK = 0
UNAUTHORIZED = 1
BAD_REQUEST = 2
INTERNAL = 3
DEVICE_NOT_BOUND = 4
WRONG_DEVICE_OR_TOKEN = 1001
NUMBER_TAKEN = 1002
WRONG_NUMBER_OR_PASSWORD = 1003
USER_NOT_FOUND = 1004
GROUP_NOT_FOUND = 1005
NOT_GROUP_MEMBER = 1006
PERMISSION_DENIED = 1007
GROUP_FULL = 1008
TOO_MANY_GROUPS = 1009
TOO_MANY_FRIENDS = 1010
TOO_MANY_DEVICES = 1011
SIGN_IN_THROTTLED = 1012
REGISTRATION_THROTTLED = 1013
TOKEN_EXPIRED = 1014
DEVICE_NOT_FOUND = 1015


class GoimError(Exception):
    """A request the service refuses, with a code clients can act on."""

    def __init__(self, code: int, message: str, *, retry_after: float | None = None) -> None:
        """
        Args:
            retry_after: seconds after which the same request may succeed (429s:
                sent as ``Retry-After``).
        """
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"GoimError({self.code}, {self.message!r})"


def bad_request(message: str) -> GoimError:
    """A code-2 error for invalid input."""
    return GoimError(BAD_REQUEST, message)
