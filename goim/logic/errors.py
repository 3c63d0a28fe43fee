"""Errors the services raise, with the API codes of DESIGN section 4.

The HTTP status of each code belongs to the resources layer (goim/resources/status.py).
"""

from goim.logic.codes import ApiCode

# The module-level names predate ApiCode; both spell the same members (typed int so
# that tables keyed by them take any code).
OK: int = ApiCode.OK
UNAUTHORIZED: int = ApiCode.UNAUTHORIZED
BAD_REQUEST: int = ApiCode.BAD_REQUEST
INTERNAL: int = ApiCode.INTERNAL
DEVICE_NOT_BOUND: int = ApiCode.DEVICE_NOT_BOUND
WRONG_DEVICE_OR_TOKEN: int = ApiCode.WRONG_DEVICE_OR_TOKEN
NUMBER_TAKEN: int = ApiCode.NUMBER_TAKEN
WRONG_NUMBER_OR_PASSWORD: int = ApiCode.WRONG_NUMBER_OR_PASSWORD
USER_NOT_FOUND: int = ApiCode.USER_NOT_FOUND
GROUP_NOT_FOUND: int = ApiCode.GROUP_NOT_FOUND
NOT_GROUP_MEMBER: int = ApiCode.NOT_GROUP_MEMBER
PERMISSION_DENIED: int = ApiCode.PERMISSION_DENIED
GROUP_FULL: int = ApiCode.GROUP_FULL
TOO_MANY_GROUPS: int = ApiCode.TOO_MANY_GROUPS
TOO_MANY_FRIENDS: int = ApiCode.TOO_MANY_FRIENDS
TOO_MANY_DEVICES: int = ApiCode.TOO_MANY_DEVICES
SIGN_IN_THROTTLED: int = ApiCode.SIGN_IN_THROTTLED
REGISTRATION_THROTTLED: int = ApiCode.REGISTRATION_THROTTLED
TOKEN_EXPIRED: int = ApiCode.TOKEN_EXPIRED
DEVICE_NOT_FOUND: int = ApiCode.DEVICE_NOT_FOUND
MESSAGE_NOT_FOUND: int = ApiCode.MESSAGE_NOT_FOUND
NOT_MESSAGE_SENDER: int = ApiCode.NOT_MESSAGE_SENDER
CHANGE_WINDOW_CLOSED: int = ApiCode.CHANGE_WINDOW_CLOSED
MESSAGE_RECALLED: int = ApiCode.MESSAGE_RECALLED
PUSH_DISABLED: int = ApiCode.PUSH_DISABLED
PUSH_KEY_WRONG: int = ApiCode.PUSH_KEY_WRONG
PUSH_JOB_NOT_FOUND: int = ApiCode.PUSH_JOB_NOT_FOUND
IDEMPOTENCY_KEY_REUSED: int = ApiCode.IDEMPOTENCY_KEY_REUSED


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
